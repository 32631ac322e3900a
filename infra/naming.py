"""Every name and setting the CDK app gives, from the stage alone (``tools/stages.py``) and
Chalice's own naming for what ``chalice package`` generates, so that a stage deployed before CDK
updates in place: the same stack names, logical ids and resource names."""

from __future__ import annotations

import os

from aws_cdk import Fn, aws_logs
from chalice.utils import to_cfn_resource_name

from infra.packaging import API_FUNCTION
from tools import topology
from tools.services import ServiceDef
from tools.stages import LOCALSTACK_ENDPOINT, Naming

__all__ = ["API_FUNCTION", "LOCALSTACK_ENDPOINT", "Naming"]

PROJECT = topology.PROJECT
DEFAULT_STAGE = "dev"
REST_API = "RestAPI"  # Chalice's logical ids for the REST API and its function's role
API_ROLE = "ApiHandlerRole"
API_STAGE = "api"  # api_gateway_stage of every .chalice/config.json: the URL's path
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
LOG_RETENTION = aws_logs.RetentionDays.TWO_WEEKS
# The whole stage's API throttling: above it, the contract's 429.
THROTTLING_RATE_LIMIT = 50
THROTTLING_BURST_LIMIT = 100

# CDK context keys (``cdk synth -c stage=prod``); LOCALSTACK=1 in the environment does what
# -c localstack=true does (the Makefile sets it for cdklocal).
STAGE_CONTEXT = "stage"
LOCALSTACK_CONTEXT = "localstack"
# Where the gateway's function reaches the other APIs on LocalStack, in its path-style
# execute-api form, which needs no DNS (``<id>.execute-api.localhost.localstack.cloud`` does not
# resolve on this kind of host) and no certificate (the https form failed with SSLError).
LOCALSTACK_ENDPOINT_CONTEXT = "localstackEndpoint"
LOCALSTACK_ENV = "LOCALSTACK"


def service_stack_name(service: ServiceDef, stage: str) -> str:
    return Naming(stage).stack(service)


def function_id(handler: str) -> str:
    """The logical id Chalice gives ``handler``'s function (CamelCase of its name)."""
    return to_cfn_resource_name(handler)


def role_id(handler: str) -> str:
    """The logical id of the role Chalice makes for a function with its own policy file."""
    return to_cfn_resource_name(f"{handler}_role")


def event_source_id(handler: str, kind: str) -> str:
    """The key of the SAM event Chalice gives ``handler`` (``kind``: dynamodb or sqs)."""
    return to_cfn_resource_name(f"{handler}-{kind}-event-source")


def function_suffix(handler: str) -> str:
    """What follows the stack's name in an event function's name: ``-relay-user-changes``."""
    return "-" + handler.replace("_", "-")


def url_parameter(service: ServiceDef) -> str:
    """The gateway's resources.json parameter that takes ``service``'s URL (``UserApiUrl``)."""
    return to_cfn_resource_name(service.name) + "Url"


def localstack_requested(context: object) -> bool:
    yes = ("true", "1", "yes")
    return str(context).lower() in yes or os.environ.get(LOCALSTACK_ENV, "").lower() in yes


def service_url(rest_api_id: str, localstack_endpoint: str | None) -> str:
    """The base URL another stack calls a service's REST API at, built from its id. Not
    Chalice's ``EndpointURL`` output: passed across stacks it becomes an ``Fn::Sub`` whose
    ``${RestAPI}`` names a resource of the other stack, which CloudFormation refuses."""
    if localstack_endpoint is not None:
        base = localstack_endpoint.rstrip("/")
        return Fn.join("", [f"{base}/_aws/execute-api/", rest_api_id, f"/{API_STAGE}/"])
    return Fn.sub(
        "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/" + API_STAGE + "/",
        {"Api": rest_api_id},
    )
