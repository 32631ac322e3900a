"""Every name and setting the CDK app gives, derived from the stage alone (and Chalice's own
naming for what ``chalice package`` generates), so that a stage deployed by ``tools/deploy.py``
updates in place: the same stack names, logical ids and resource names.

Names never come from a stage's section of ``config.json``: a new stage starts as a copy of
another's, and a name read from there would be the other stage's.
"""

from __future__ import annotations

import os

from aws_cdk import Fn, aws_logs
from chalice.utils import to_cfn_resource_name

from tools import topology
from tools.deploy import Naming
from tools.services import ServiceDef

PROJECT = topology.PROJECT
EVENTS_PART = "events"  # shop-<stage>-events: the bus, first up and last down
DEFAULT_STAGE = "dev"
API_FUNCTION = "APIHandler"  # Chalice's logical ids for the API's function and REST API
REST_API = "RestAPI"
API_STAGE = "api"  # api_gateway_stage of every .chalice/config.json: the URL's path
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
LOG_RETENTION = aws_logs.RetentionDays.TWO_WEEKS
# The whole stage's API throttling (today's template parameters' defaults): above it, a 429.
THROTTLING_RATE_LIMIT = 50
THROTTLING_BURST_LIMIT = 100

# CDK context keys (``cdk synth -c stage=prod``) and the environment variable that does the same
# as -c localstack=true (what the Makefile's LOCALSTACK=1 sets for cdklocal).
STAGE_CONTEXT = "stage"
LOCALSTACK_CONTEXT = "localstack"
LOCALSTACK_ENDPOINT_CONTEXT = "localstackEndpoint"
LOCALSTACK_ENV = "LOCALSTACK"
# Where the gateway's function reaches the other APIs on LocalStack: LocalStack's path-style
# execute-api form, which needs no DNS (``<id>.execute-api.localhost.localstack.cloud`` does not
# resolve on this kind of host) and no certificate (the https form failed with SSLError). One
# setting: -c localstackEndpoint=... changes it for every URL.
LOCALSTACK_ENDPOINT = "http://127.0.0.1:4566"


def stack_name(stage: str, part: str) -> str:
    """Every stack's name: ``shop-<stage>-<part>`` (what tools/deploy.py named them)."""
    return f"{PROJECT}-{stage}-{part}"


def service_stack_name(service: ServiceDef, stage: str) -> str:
    return stack_name(stage, service.name.replace("_", "-"))


def function_id(handler: str) -> str:
    """The logical id Chalice gives ``handler``'s function (CamelCase of its name)."""
    return to_cfn_resource_name(handler)


def role_id(handler: str) -> str:
    """The logical id of the role Chalice makes for a function with its own policy file."""
    return to_cfn_resource_name(f"{handler}_role")


def api_role_id() -> str:
    return "ApiHandlerRole"


def event_source_id(handler: str, kind: str) -> str:
    """The key of the SAM event Chalice gives ``handler`` (``kind``: dynamodb or sqs)."""
    return to_cfn_resource_name(f"{handler}-{kind}-event-source")


def function_suffix(handler: str) -> str:
    """What follows the stack's name in an event function's name: ``-relay-user-changes``."""
    return "-" + handler.replace("_", "-")


def url_parameter(service: ServiceDef) -> str:
    """The gateway's resources.json parameter that takes ``service``'s URL (``UserApiUrl``)."""
    return to_cfn_resource_name(service.name) + "Url"


def jwks_parameter(stage: str) -> str:
    """The SSM parameter with the public JWKS (made before the stacks by infra/deploy.py)."""
    return Naming(stage).jwks_parameter


def signing_key_secret(stage: str) -> str:
    return Naming(stage).signing_key_secret


def localstack_requested(context: object) -> bool:
    """-c localstack=true, or LOCALSTACK=1 in the environment (for cdklocal)."""
    if str(context).lower() in ("true", "1", "yes"):
        return True
    return os.environ.get(LOCALSTACK_ENV, "").lower() in ("true", "1", "yes")


def service_url(rest_api_id: str, localstack_endpoint: str | None) -> str:
    """The base URL another stack calls a service's REST API at, built from its id.

    Not Chalice's ``EndpointURL`` output: passed across stacks it becomes an ``Fn::Sub`` whose
    ``${RestAPI}`` names a resource of the other stack, which CloudFormation refuses.
    """
    if localstack_endpoint is not None:
        base = localstack_endpoint.rstrip("/")
        return Fn.join("", [f"{base}/_aws/execute-api/", rest_api_id, f"/{API_STAGE}/"])
    return Fn.sub(
        "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/" + API_STAGE + "/",
        {"Api": rest_api_id},
    )
