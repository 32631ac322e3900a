"""Build each service into a CloudFormation (SAM) template and the zip Lambda will run.

``python -m tools.package --stage dev`` writes ``build/dev/<service>/sam.json`` and
``deployment.zip`` for every service, using ``chalice package --merge-template`` so that Chalice
keeps generating the function, the REST API and the role, and the service's own
``resources.json`` adds what Chalice cannot express: its table, a data-access policy scoped to that
table's ARN, and the environment wired by ``Ref`` instead of names typed into a config file.

Six things happen here rather than in a config file, each for a reason:

* ``lib/svckit`` is copied into the app's ``vendor/`` first, because Chalice packages only
  ``app.py``, ``chalicelib/`` and ``vendor/`` (a local pip package in ``requirements.txt`` is not
  collected, and symlinks are not followed). The copy is removed afterwards, so nobody edits it.
* A fragment common to every service (:data:`COMMON_FRAGMENT`) is deep-merged under the service's
  own one: API Gateway's own errors in the contract's ``{"Code", "Message"}`` shape with an
  ``X-Request-Id`` header (API Gateway's request id), stage
  throttling for the contract's 429, the public JWKS from an SSM parameter.
* The service's share of the events (``tools.eventstack.service_fragment``, generated from
  ``tools/topology.py``) is merged over both: its relays' table streams and failure queues, its
  subscriptions' queues, dead-letter queues, rules and queue policies, and one policy per event
  function. Chalice's decorators can only be given a placeholder ARN (the stream and the queue
  exist once the stack has made them); the merge replaces it, and a template that still holds
  one is refused.
* Every function (the API's and each event function) gets its stack's name plus its own suffix
  as its name, a policy that lets it send its traces to X-Ray (:func:`tracing_fragment`; Chalice's
  ``"xray": true`` only switches tracing on, and SAM adds the permission only to roles it makes
  itself), a log group with a retention, so that deleting the stack deletes the logs too,
  and the same environment as the API function (``set-by-deploy`` values are wired once, in
  ``resources.json``, for all of them). The name is what lets each function's
  ``.chalice/policy-<stage>*.json`` grant logs on that function's own log group instead of
  every Lambda's. The function's ``STAGE`` setting is the stage being packaged
  (:func:`stage_fragment`), not a value from ``config.json``, where a new stage starts as a
  copy of another's section: tokens name their stage, so one stage's tokens fail in another.
* The REST API is traced by X-Ray and named after its stack (the common fragment): ``chalice
  package`` leaves the stage's ``TracingEnabled`` unset (aws/chalice#1753) and names the API
  after the app (``info.title`` of its Swagger body), the same in every stage, while API
  Gateway's metrics are keyed by that name (``ApiName``): the stage's alarms and dashboard
  (``tools/observability.py``) need one name per stage. Every table's name is a stack output
  (``table_output``), which the deploy hands to the observability stack.
* The result is checked before anyone deploys it (:func:`check_template`): for every function,
  runtime ``python3.11``, its stage, its name, its log group, active tracing and the X-Ray
  permission, no ``set-by-deploy`` placeholder left in the environment, no logs permission wider
  than its own log group; the API traced and named after its stack; each event
  function with a role of its own; no placeholder stream or queue ARN anywhere; every queue's
  visibility timeout at least six times its consumer's timeout. A wrong template fails here,
  not half-way through a stack.

Dependencies are downloaded by Chalice as manylinux wheels from PyPI. Chalice caches the built
package in ``<service>/.chalice/deployments/`` keyed by the requirements, the app code and
``vendor/``; pip's own cache makes a rebuild after a code change quick.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svckit import events
from svckit.tokens import STAGE_SETTING
from tools import eventstack, observability, topology
from tools.services import ROOT, SERVICES, ServiceDef

BUILD_DIR = ROOT / "build"
SVCKIT_SOURCE = ROOT / "lib" / "svckit" / "svckit"
RUNTIME = "python3.11"
# The value a stage's config gives a variable that only the deploy can know (a table made by the
# stack, a URL of another stack, the public key). The merge must replace every one of them.
PLACEHOLDER = "set-by-deploy"
FUNCTION = eventstack.API_FUNCTION  # Chalice's logical id for the function of the REST API
FUNCTION_TYPE = "AWS::Serverless::Function"
# Lambda asks a queue's visibility timeout to be at least six times its consumer's timeout, so a
# message is not handed to a second poller while the first one still works on it.
VISIBILITY_TIMEOUT_FACTOR = 6
REST_API = "RestAPI"  # Chalice's logical id for the REST API (an AWS::Serverless::Api)
# What a traced function needs to send its segments (Lambda's own X-Ray docs). X-Ray has no
# resource-level permissions for these two: "*" is the only resource it accepts.
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
XRAY_STATEMENT: dict[str, Any] = {
    "Sid": "SendTraces",
    "Effect": "Allow",
    "Action": XRAY_ACTIONS,
    "Resource": "*",
}
# The API's name: its stack's, so each stage's API has a name of its own in API Gateway's
# metrics (dimension ApiName). Set both as the resource's Name and as the Swagger body's title,
# which API Gateway also reads a name from when it imports the body, so either way it is this.
API_NAME: dict[str, str] = {"Ref": "AWS::StackName"}


def function_name(suffix: str = "") -> dict[str, str]:
    """A function's name: its stack's (so its stage's), plus its suffix for an event function
    (``-relay-user-changes``). The API function's is the stack's name alone."""
    if not suffix:
        return {"Ref": "AWS::StackName"}
    return {"Fn::Sub": "${AWS::StackName}" + suffix}


def own_log_group_arn(suffix: str = "") -> dict[str, str]:
    """The one log group a function may write to: its own (see :func:`function_name`). Each
    ``.chalice/policy-<stage>*.json`` must grant logs on exactly this ARN; check_template refuses
    anything wider."""
    return {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
        f":log-group:/aws/lambda/${{AWS::StackName}}{suffix}:*"
    }


KEEP_CACHED_PACKAGES = 3  # per service, in .chalice/deployments (each is several MB)


# API Gateway's answers made without calling the function never pass through the middleware
# that sets X-Request-Id (svckit.web), so the header is mapped here from API Gateway's own id for
# the request, the one its access and execution logs carry.
GATEWAY_RESPONSE_HEADERS = {"gatewayresponse.header.X-Request-Id": "context.requestId"}


def _gateway_response(
    code: str, status: int | None = None, message: str | None = None
) -> dict[str, Any]:
    """One of API Gateway's own error answers, rewritten into the contract's error shape and
    given the ``X-Request-Id`` header every answer of the contract carries.

    ``$context.error.messageString`` is API Gateway's message already quoted as a JSON string.
    The templates go into the Swagger body (``x-amazon-apigateway-gateway-responses``) rather than
    separate ``AWS::ApiGateway::GatewayResponse`` resources: a SAM API re-imports its body on each
    deployment and separate gateway responses are then dropped from the deployed stage
    (aws/serverless-application-model#390, #623), while the body's own are part of every deployment.
    A fixed ``message`` must hold no ``$`` or ``#``: the template is VTL.
    """
    if message is not None and ("$" in message or "#" in message):
        raise ValueError(f"gateway response message {message!r}: '$' and '#' are VTL syntax")
    text = json.dumps(message) if message is not None else "$context.error.messageString"
    response: dict[str, Any] = {
        "responseParameters": dict(GATEWAY_RESPONSE_HEADERS),
        "responseTemplates": {"application/json": f'{{"Code": "{code}", "Message": {text}}}'},
    }
    if status is not None:
        response["statusCode"] = str(status)
    return response


GATEWAY_RESPONSES: dict[str, dict[str, Any]] = {
    # API Gateway answers an unknown path or method with 403 "Missing Authentication Token";
    # a user of a REST API expects 404, and Chalice's local server gives 404 too.
    "MISSING_AUTHENTICATION_TOKEN": _gateway_response(
        "NotFoundError", 404, "no route matches this method and path"
    ),
    # Also a 404, which DEFAULT_4XX would name BadRequestError.
    "RESOURCE_NOT_FOUND": _gateway_response("NotFoundError", 404),
    "THROTTLED": _gateway_response("TooManyRequestsError", 429, "too many requests, retry later"),
    "QUOTA_EXCEEDED": _gateway_response("TooManyRequestsError", 429),
    "REQUEST_TOO_LARGE": _gateway_response("PayloadTooLargeError", 413),
    "ACCESS_DENIED": _gateway_response("ForbiddenError", 403),
    "UNAUTHORIZED": _gateway_response("UnauthorizedError", 401),
    "BAD_REQUEST_BODY": _gateway_response("BadRequestError", 400),
    "BAD_REQUEST_PARAMETERS": _gateway_response("BadRequestError", 400),
    "INTEGRATION_FAILURE": _gateway_response("BadGatewayError", 502),
    "INTEGRATION_TIMEOUT": _gateway_response("GatewayTimeoutError", 504),
    # Anything else keeps API Gateway's status; the codes are Chalice's generic ones.
    "DEFAULT_4XX": _gateway_response("BadRequestError"),
    "DEFAULT_5XX": _gateway_response("InternalServerError"),
}

COMMON_FRAGMENT: dict[str, Any] = {
    "Parameters": {
        "JwksParameterName": {
            # CloudFormation resolves the parameter's value at each deploy, so the functions get
            # the public key inline and make no SSM call at cold start.
            "Type": "AWS::SSM::Parameter::Value<String>",
            "Description": "SSM String parameter with the public JWKS (made by tools/deploy.py).",
        },
        "ThrottlingRateLimit": {
            "Type": "Number",
            "Default": 50,
            "MinValue": 1,
            "Description": "Steady requests/s for the whole stage; above it API Gateway gives 429.",
        },
        "ThrottlingBurstLimit": {
            "Type": "Number",
            "Default": 100,
            "MinValue": 1,
            "Description": "Burst bucket size for the whole stage.",
        },
        "LogRetentionDays": {
            "Type": "Number",
            "Default": 14,
            "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365],
            "Description": "How long the function's CloudWatch logs are kept.",
        },
    },
    "Resources": {
        REST_API: {
            "Properties": {
                "Name": API_NAME,
                # X-Ray for the stage: a request is traced from API Gateway on, and the function's
                # own segment joins the trace API Gateway started (the Serverless::Api property
                # that becomes the stage's TracingEnabled; chalice package never sets it).
                "TracingEnabled": True,
                "MethodSettings": [
                    {
                        "ResourcePath": "/*",
                        "HttpMethod": "*",
                        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
                        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
                    }
                ],
                "DefinitionBody": {
                    "info": {"title": API_NAME},
                    "x-amazon-apigateway-gateway-responses": GATEWAY_RESPONSES,
                },
            }
        },
        FUNCTION: {
            # The public key inline: CloudFormation resolves the parameter at each deploy.
            "Properties": {"Environment": {"Variables": {"JWT_JWKS": {"Ref": "JwksParameterName"}}}}
        },
    },
}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Chalice's merge rule: mappings merge key by key; anything else ``override`` replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def functions_of(service: ServiceDef) -> dict[str, str]:
    """Every function the service's template must hold: logical id -> the suffix of its name
    after the stack's (empty for the API function; ``-relay-user-changes`` etc. for the event
    functions of ``tools/topology.py``)."""
    functions = {FUNCTION: ""}
    for logical_id, handler in eventstack.event_functions(service).items():
        functions[logical_id] = eventstack.function_suffix(handler)
    return functions


def role_of(logical_id: str) -> str:
    """The role Chalice gives a function: ``ApiHandlerRole`` for the API's, its own
    ``<Function>Role`` for a function with its own ``iam_policy_file``."""
    return "ApiHandlerRole" if logical_id == FUNCTION else f"{logical_id}Role"


def log_group_of(logical_id: str) -> str:
    return f"{logical_id}LogGroup"


def functions_fragment(functions: Mapping[str, str]) -> dict[str, Any]:
    """Each function's name and its log group.

    Named after its stack (so after the stage) rather than by CloudFormation at random: the
    role's logs permission must name the function's log group, and it cannot refer to the
    function itself (the function needs the role first). Lambda would create the log group
    itself, with no retention, and it would outlive the stack; declared here it has a retention
    and goes away with ``make destroy``.
    """
    resources: dict[str, Any] = {}
    for logical_id, suffix in functions.items():
        resources[logical_id] = {"Properties": {"FunctionName": function_name(suffix)}}
        resources[log_group_of(logical_id)] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{logical_id}}}"},
                "RetentionInDays": {"Ref": "LogRetentionDays"},
            },
        }
    return {"Resources": resources}


def tracing_policy_id(logical_id: str) -> str:
    return f"{logical_id}TracingPolicy"


def tracing_fragment(functions: Iterable[str]) -> dict[str, Any]:
    """One policy per function's role that lets it send its traces to X-Ray.

    The stage's ``"xray": true`` in ``.chalice/config.json`` makes Chalice write
    ``Tracing: Active`` on every function; Lambda then sends the function's segments with the
    function's role, which must allow :data:`XRAY_ACTIONS`. SAM attaches AWS's managed X-Ray
    policy only to a role it makes itself, and Chalice's roles are the template's own. A policy
    per role rather than one shared keeps every policy attached to exactly one function, as all
    the others are, and each function waits for its own (``_depend_on_policies``).
    """
    resources = {
        tracing_policy_id(logical_id): {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "send-traces",
                "Roles": [{"Ref": role_of(logical_id)}],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [dict(XRAY_STATEMENT)]},
            },
        }
        for logical_id in functions
    }
    return {"Resources": resources}


def tables_fragment(service: ServiceDef) -> dict[str, Any]:
    """Every table's name as a stack output (``observability.table_output``): CloudFormation
    makes the names up, and the observability stack's alarms and dashboard need them."""
    outputs = {
        observability.table_output(logical_id): {"Value": {"Ref": logical_id}}
        for logical_id in service.tables()
    }
    return {"Outputs": outputs} if outputs else {}


def stage_fragment(stage: str, functions: Iterable[str] = (FUNCTION,)) -> dict[str, Any]:
    """Every function's ``STAGE`` setting, from the stage being packaged.

    Tokens name their stage in ``iss`` and ``aud`` (``svckit.tokens``), so a token of one stage
    fails in another. The value is the name passed to ``--stage``, merged last, so it cannot come
    from a stage's ``environment_variables`` copied from another stage.
    """
    variables = {STAGE_SETTING: stage}
    return {
        "Resources": {
            logical_id: {"Properties": {"Environment": {"Variables": dict(variables)}}}
            for logical_id in functions
        }
    }


def _variables(resource: Mapping[str, Any]) -> dict[str, Any]:
    return dict(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))


def _share_environment(fragment: dict[str, Any], functions: Iterable[str]) -> None:
    """Give every function the API function's wired variables (under its own, which win).

    Chalice gives every function of an app the same ``environment_variables`` of the stage, so
    each event function also starts with every ``set-by-deploy`` value; wired once, for the API
    function, in ``resources.json``, they are wired for all.
    """
    resources = fragment["Resources"]
    shared = _variables(resources[FUNCTION])
    for logical_id in functions:
        own = _variables(resources.get(logical_id, {}))
        function = resources.setdefault(logical_id, {}).setdefault("Properties", {})
        function.setdefault("Environment", {})["Variables"] = {**shared, **own}


def _depend_on_policies(fragment: dict[str, Any], functions: Iterable[str]) -> None:
    """Make each function wait for every ``AWS::IAM::Policy`` attached to its role.

    The policies are resources of their own, so nothing else orders them before the function;
    and Lambda checks the role when it creates an event source mapping (it must already read
    the stream or the queue, and send to the failure queue) and when the function first runs.
    The mappings follow their function, so waiting here covers them too.
    """
    resources = fragment["Resources"]
    for logical_id in functions:
        role = {"Ref": role_of(logical_id)}
        policies = {
            policy_id
            for policy_id, policy in resources.items()
            if policy.get("Type") == "AWS::IAM::Policy"
            and role in policy.get("Properties", {}).get("Roles", [])
        }
        existing = resources.get(logical_id, {}).get("DependsOn", [])
        existing = [existing] if isinstance(existing, str) else list(existing)
        if policies - set(existing):
            resources[logical_id]["DependsOn"] = sorted(set(existing) | policies)


def merge_fragment(service: ServiceDef, stage: str) -> dict[str, Any]:
    """What ``--merge-template`` gets, each layer over the one before: the common fragment, the
    tables the topology adds (first, as ``ServiceDef.resources`` lists them), the service's own
    fragment, its events, every function's name, log group and tracing policy, every table's
    name as an output, and the stage's name."""
    own_path = service.directory / "resources.json"
    own = json.loads(own_path.read_text()) if own_path.exists() else {}
    functions = functions_of(service)
    merged = deep_merge(COMMON_FRAGMENT, {"Resources": topology.generated_tables(service)})
    for layer in (
        own,
        eventstack.service_fragment(service, stage),
        functions_fragment(functions),
        tracing_fragment(functions),
        tables_fragment(service),
        stage_fragment(stage, functions),
    ):
        merged = deep_merge(merged, layer)
    _share_environment(merged, functions)
    _depend_on_policies(merged, functions)
    return merged


def vendor_svckit(service: ServiceDef) -> Path:
    """A fresh copy of the shared library in the app's ``vendor/``, without caches.

    Byte-identical copies give Chalice the same package hash, so its cache still hits.
    """
    target = service.directory / "vendor" / "svckit"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SVCKIT_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def remove_vendored(service: ServiceDef) -> None:
    vendor = service.directory / "vendor"
    shutil.rmtree(vendor / "svckit", ignore_errors=True)
    if vendor.is_dir() and not any(vendor.iterdir()):
        vendor.rmdir()


def _prune_chalice_cache(service: ServiceDef, keep: int = KEEP_CACHED_PACKAGES) -> None:
    """Chalice adds a multi-MB zip per code change and never deletes one; keep the newest few."""
    cache = service.directory / ".chalice" / "deployments"
    if not cache.is_dir():
        return
    zips = sorted(cache.glob("*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in zips[keep:]:
        old.unlink(missing_ok=True)


class PackageError(RuntimeError):
    """A service did not package, or its template is not what the deploy expects."""


def _chalice_env() -> dict[str, str]:
    env = dict(os.environ)
    # Chalice builds a boto3 session even to package; it needs a region but never calls AWS.
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in vendor/, which would change the hash
    return env


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(template: Mapping[str, Any], role: str) -> list[dict[str, Any]]:
    """Every IAM statement that reaches ``role``: its inline policies (Chalice puts the policy
    file there) and every ``AWS::IAM::Policy`` attached to it."""
    resources = template.get("Resources", {})
    statements = [
        statement
        for policy in resources.get(role, {}).get("Properties", {}).get("Policies", [])
        for statement in policy.get("PolicyDocument", {}).get("Statement", [])
    ]
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::IAM::Policy" and {"Ref": role} in props.get("Roles", []):
            statements += props.get("PolicyDocument", {}).get("Statement", [])
    return statements


def _role_id(service: ServiceDef, logical_id: str, function: Mapping[str, Any]) -> str:
    role = function.get("Role")
    if not (isinstance(role, dict) and set(role) == {"Fn::GetAtt"}):
        raise PackageError(f"{service.name}: {logical_id} has no role of the stack: {role!r}")
    return str(role["Fn::GetAtt"][0])


def _check_function(
    service: ServiceDef, template: Mapping[str, Any], stage: str, logical_id: str, suffix: str
) -> None:
    """One function's settings: what check_template requires of every function."""
    resource = template["Resources"][logical_id]
    function = resource.get("Properties", {})
    where = f"{service.name}: {logical_id}"
    variables = function.get("Environment", {}).get("Variables", {})
    if variables.get(STAGE_SETTING) != stage:
        raise PackageError(
            f"{where}: {STAGE_SETTING} is {variables.get(STAGE_SETTING)!r}, not the "
            f"packaged stage {stage!r}; tokens would not name the right stage"
        )
    if function.get("Runtime") != RUNTIME:
        raise PackageError(
            f"{where}: runtime is {function.get('Runtime')!r}, expected {RUNTIME!r}; "
            f"Chalice takes it from the interpreter, so package with Python 3.11"
        )
    if function.get("FunctionName") != function_name(suffix):
        raise PackageError(
            f"{where}: FunctionName must be the stack's name{' + ' + suffix if suffix else ''}"
        )
    log_group = template["Resources"].get(log_group_of(logical_id), {})
    if log_group.get("Properties", {}).get("LogGroupName") != {
        "Fn::Sub": f"/aws/lambda/${{{logical_id}}}"
    }:
        raise PackageError(f"{where}: no log group {log_group_of(logical_id)} of its own")
    if function.get("Tracing") != "Active":
        raise PackageError(
            f"{where}: Tracing is {function.get('Tracing')!r}, not 'Active'; set \"xray\": true "
            f"in stages.{stage} of {service.name}/.chalice/config.json"
        )
    unset = sorted(k for k, v in variables.items() if v == PLACEHOLDER)
    if unset:
        raise PackageError(
            f"{where}: {', '.join(unset)} still {PLACEHOLDER!r}; "
            f"its resources.json or tools/package.py must wire them"
        )
    role = _role_id(service, logical_id, function)
    own_group = own_log_group_arn(suffix)
    statements = role_statements(template, role)
    tracing = [
        s for s in statements if any(str(a).startswith("xray:") for a in _as_list(s.get("Action")))
    ]
    if [{k: v for k, v in s.items() if k != "Sid"} for s in tracing] != [
        {k: v for k, v in XRAY_STATEMENT.items() if k != "Sid"}
    ]:
        raise PackageError(
            f"{where}: its role must allow exactly {', '.join(XRAY_ACTIONS)} once (its "
            f"{tracing_policy_id(logical_id)}), not {json.dumps(tracing)}"
        )
    for statement in statements:
        actions = _as_list(statement.get("Action", []))
        if any(str(a).startswith("logs:") for a in actions) and (
            statement.get("Resource") != own_group
        ):
            raise PackageError(
                f"{where}: a logs permission must name only the function's own log "
                f"group, {own_group['Fn::Sub']} (see .chalice/policy-<stage>*.json), "
                f"not {json.dumps(statement.get('Resource'))}"
            )


def _check_own_roles(service: ServiceDef, template: Mapping[str, Any], stage: str) -> None:
    """Each event function on a role of its own: its least privilege is that role's."""
    resources = template["Resources"]
    for logical_id, handler in eventstack.event_functions(service).items():
        role = _role_id(service, logical_id, resources[logical_id]["Properties"])
        if role != eventstack.role_id(handler):
            raise PackageError(
                f"{service.name}: {logical_id} runs as {role}, not a role of its own; give "
                f"stages.{stage}.lambda_functions.{handler} an iam_policy_file in "
                ".chalice/config.json"
            )


def _check_events(service: ServiceDef, template: Mapping[str, Any]) -> None:
    """What the events need of the template: each relay's table streaming both images
    (svckit's relay reads old and new), each queue's visibility timeout long enough for its
    consumer."""
    resources = template["Resources"]
    for relay in topology.relays_of(service):
        stream = resources.get(relay.table, {}).get("Properties", {}).get("StreamSpecification")
        if stream != {"StreamViewType": "NEW_AND_OLD_IMAGES"}:
            raise PackageError(
                f"{service.name}: {relay.table} must have a NEW_AND_OLD_IMAGES stream for "
                f"{relay.handler}, not {stream!r}"
            )
    for sub in topology.subscriptions_of(service):
        function = resources[eventstack.function_id(sub.handler)]["Properties"]
        visibility = resources[sub.queue]["Properties"]["VisibilityTimeout"]
        if visibility < VISIBILITY_TIMEOUT_FACTOR * int(function.get("Timeout", 3)):
            raise PackageError(
                f"{service.name}: {sub.queue}'s visibility timeout ({visibility} s) is under "
                f"{VISIBILITY_TIMEOUT_FACTOR} times {sub.handler}'s timeout "
                f"({function.get('Timeout')} s); raise it in tools/topology.py"
            )


def _check_api_and_outputs(service: ServiceDef, template: Mapping[str, Any]) -> None:
    """The REST API traced and named after its stack; every table's name an output. What the
    observability stack relies on: the API's metrics under a name of the stage's own, the
    request traced from API Gateway on, each table's name handed over by the deploy."""
    api = template.get("Resources", {}).get(REST_API, {}).get("Properties", {})
    if api.get("TracingEnabled") is not True:
        raise PackageError(f"{service.name}: {REST_API} must have TracingEnabled true")
    title = api.get("DefinitionBody", {}).get("info", {}).get("title")
    if api.get("Name") != API_NAME or title != API_NAME:
        raise PackageError(
            f"{service.name}: {REST_API}'s Name and its body's info.title must both be "
            f"{API_NAME} (its metrics' ApiName), not {api.get('Name')!r} and {title!r}"
        )
    outputs = template.get("Outputs", {})
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        output = observability.table_output(logical_id)
        if outputs.get(output, {}).get("Value") != {"Ref": logical_id}:
            raise PackageError(f"{service.name}: no output {output} naming table {logical_id}")


def check_template(service: ServiceDef, template: Mapping[str, Any], stage: str) -> None:
    """Refuse a template the deploy would fail on later, or that would run with wrong settings."""
    text = json.dumps(template)
    for placeholder in (events.STREAM_ARN_PLACEHOLDER, events.QUEUE_ARN_PLACEHOLDER):
        if placeholder in text:
            raise PackageError(
                f"{service.name}: the template still holds the placeholder ARN {placeholder}: "
                "an event function of app.py that tools/topology.py does not wire"
            )
    expected = functions_of(service)
    present = {
        logical_id
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == FUNCTION_TYPE
    }
    missing = sorted(set(expected) - present)
    if missing:
        raise PackageError(
            f"{service.name}: no function {', '.join(missing)} in the template; app.py must "
            "define the handlers tools/topology.py names (see svckit.events)"
        )
    unknown = sorted(present - set(expected))
    if unknown:
        raise PackageError(
            f"{service.name}: function(s) {', '.join(unknown)} that tools/topology.py does not "
            "know; they would get no name, log group or events wiring"
        )
    roles: dict[str, str] = {}
    for logical_id in expected:
        role = _role_id(service, logical_id, template["Resources"][logical_id]["Properties"])
        if role in roles:
            raise PackageError(
                f"{service.name}: {logical_id} shares the role {role} with {roles[role]}"
            )
        roles[role] = logical_id
    _check_own_roles(service, template, stage)
    for logical_id, suffix in expected.items():
        _check_function(service, template, stage, logical_id, suffix)
    _check_events(service, template)
    _check_api_and_outputs(service, template)


@dataclass(frozen=True)
class Packaged:
    service: ServiceDef
    directory: Path
    seconds: float

    @property
    def template_path(self) -> Path:
        return self.directory / "sam.json"

    @property
    def zip_path(self) -> Path:
        return self.directory / "deployment.zip"

    def template(self) -> dict[str, Any]:
        return json.loads(self.template_path.read_text())


def package_service(service: ServiceDef, stage: str, out_root: Path) -> Packaged:
    """``chalice package`` one service into ``out_root/<service>/`` and check the result."""
    out_dir = out_root / service.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    merge_path = out_root / f".{service.name}.merge.json"
    merge_path.write_text(json.dumps(merge_fragment(service, stage), indent=2))
    started = time.perf_counter()
    vendor_svckit(service)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from chalice.cli import main; main()",
                "--project-dir",
                str(service.directory),
                "package",
                "--stage",
                stage,
                "--merge-template",
                str(merge_path),
                str(out_dir),
            ],
            env=_chalice_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        remove_vendored(service)
    if result.returncode != 0:
        raise PackageError(
            f"{service.name}: chalice package failed ({result.returncode})\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    packaged = Packaged(service, out_dir, time.perf_counter() - started)
    check_template(service, packaged.template(), stage)
    _prune_chalice_cache(service)
    return packaged


def package_all(
    stage: str, out_root: Path | None = None, services: Iterable[ServiceDef] = SERVICES
) -> list[Packaged]:
    """Package every service (dependencies first, the order the deploy uses), and write the
    stage's bus template beside them (``events/template.json``, what the deploy sends first) and
    its observability template (``observability/template.json``, sent last)."""
    root = out_root if out_root is not None else BUILD_DIR / stage
    eventstack.write_bus_template(stage, root)
    observability.write_template(stage, root)
    return [package_service(service, stage, root) for service in services]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, help="output folder (default build/<stage>)")
    args = parser.parse_args(argv)
    root = args.out if args.out is not None else BUILD_DIR / args.stage
    try:
        for item in package_all(args.stage, root):
            size = item.zip_path.stat().st_size / 1e6
            where = item.directory
            if where.is_relative_to(ROOT):
                where = where.relative_to(ROOT)
            print(
                f"{item.service.name:13} {where}/sam.json + deployment.zip ({size:.1f} MB)"
                f"  {item.seconds:.1f}s"
            )
    except PackageError as exc:
        print(f"package failed: {exc}", file=sys.stderr)
        return 1
    for part, name in (
        (eventstack.EVENTS_STACK_PART, eventstack.TEMPLATE_FILE),
        (observability.STACK_PART, observability.TEMPLATE_FILE),
    ):
        path = root / part / name
        print(f"{part:13} {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
