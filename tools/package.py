"""Build each service into a CloudFormation (SAM) template and the zip Lambda will run.

``python -m tools.package --stage dev`` writes ``build/dev/<service>/sam.json`` and
``deployment.zip`` for every service, using ``chalice package --merge-template`` so that Chalice
keeps generating the function, the REST API and the role, and the service's own
``resources.json`` adds what Chalice cannot express: its table, a data-access policy scoped to that
table's ARN, and the environment wired by ``Ref`` instead of names typed into a config file.

Four things happen here rather than in a config file, each for a reason:

* ``lib/svckit`` is copied into the app's ``vendor/`` first, because Chalice packages only
  ``app.py``, ``chalicelib/`` and ``vendor/`` (a local pip package in ``requirements.txt`` is not
  collected, and symlinks are not followed). The copy is removed afterwards, so nobody edits it.
* A fragment common to every service (:data:`COMMON_FRAGMENT`) is deep-merged under the service's
  own one: API Gateway's own errors in the contract's ``{"Code", "Message"}`` shape with an
  ``X-Request-Id`` header (API Gateway's request id), stage
  throttling for the contract's 429, the public JWKS from an SSM parameter, a log group with
  a retention, so that deleting the stack deletes the logs too, and the function's name (its
  stack's), which is what lets each ``.chalice/policy-<stage>.json`` grant logs on that
  function's own log group instead of every Lambda's.
* The function's ``STAGE`` setting is the stage being packaged (:func:`stage_fragment`), not a
  value from ``config.json``, where a new stage starts as a copy of another's section: tokens
  name their stage, so one stage's tokens fail in another.
* The result is checked before anyone deploys it: runtime ``python3.11``, no ``set-by-deploy``
  placeholder left in the environment, no logs permission wider than the function's own log
  group. A wrong template fails here, not half-way through a stack.

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

from svckit.tokens import STAGE_SETTING
from tools.services import ROOT, SERVICES, ServiceDef

BUILD_DIR = ROOT / "build"
SVCKIT_SOURCE = ROOT / "lib" / "svckit" / "svckit"
RUNTIME = "python3.11"
# The value a stage's config gives a variable that only the deploy can know (a table made by the
# stack, a URL of another stack, the public key). The merge must replace every one of them.
PLACEHOLDER = "set-by-deploy"
FUNCTION = "APIHandler"  # Chalice's logical id for the function that serves the REST API
FUNCTION_NAME = {"Ref": "AWS::StackName"}  # the function's name: its stack's, so its stage's
# The one log group the function may write to: its own (see FunctionName in COMMON_FRAGMENT).
# Each service's .chalice/policy-<stage>.json must grant logs on exactly this ARN;
# check_template refuses anything wider.
OWN_LOG_GROUP_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
    ":log-group:/aws/lambda/${AWS::StackName}:*"
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
        "RestAPI": {
            "Properties": {
                "MethodSettings": [
                    {
                        "ResourcePath": "/*",
                        "HttpMethod": "*",
                        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
                        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
                    }
                ],
                "DefinitionBody": {"x-amazon-apigateway-gateway-responses": GATEWAY_RESPONSES},
            }
        },
        FUNCTION: {
            "Properties": {
                # Named after its stack (so after the stage) rather than by CloudFormation at
                # random: the role's logs permission must name the function's log group, and it
                # cannot refer to the function itself (the function needs the role first).
                "FunctionName": FUNCTION_NAME,
                "Environment": {"Variables": {"JWT_JWKS": {"Ref": "JwksParameterName"}}},
            }
        },
        "APIHandlerLogGroup": {
            # Lambda would create this group itself, with no retention, and it would outlive the
            # stack; declared here it has a retention and goes away with `make destroy`.
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{FUNCTION}}}"},
                "RetentionInDays": {"Ref": "LogRetentionDays"},
            },
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


def stage_fragment(stage: str) -> dict[str, Any]:
    """The function's ``STAGE`` setting, from the stage being packaged.

    Tokens name their stage in ``iss`` and ``aud`` (``svckit.tokens``), so a token of one stage
    fails in another. The value is the name passed to ``--stage``, merged last, so it cannot come
    from a stage's ``environment_variables`` copied from another stage.
    """
    variables = {STAGE_SETTING: stage}
    return {"Resources": {FUNCTION: {"Properties": {"Environment": {"Variables": variables}}}}}


def merge_fragment(service: ServiceDef, stage: str) -> dict[str, Any]:
    """What ``--merge-template`` gets: the common fragment under the service's own fragment,
    and the stage's name over both."""
    own_path = service.directory / "resources.json"
    own = json.loads(own_path.read_text()) if own_path.exists() else {}
    return deep_merge(deep_merge(COMMON_FRAGMENT, own), stage_fragment(stage))


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


def _role_statements(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The IAM statements of every role's inline policies (Chalice puts the policy file there)."""
    return [
        statement
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::IAM::Role"
        for policy in resource.get("Properties", {}).get("Policies", [])
        for statement in policy.get("PolicyDocument", {}).get("Statement", [])
    ]


def check_template(service: ServiceDef, template: Mapping[str, Any], stage: str) -> None:
    """Refuse a template the deploy would fail on later, or that would run with wrong settings."""
    function = template["Resources"][FUNCTION]["Properties"]
    variables = function.get("Environment", {}).get("Variables", {})
    if variables.get(STAGE_SETTING) != stage:
        raise PackageError(
            f"{service.name}: {STAGE_SETTING} is {variables.get(STAGE_SETTING)!r}, not the "
            f"packaged stage {stage!r}; tokens would not name the right stage"
        )
    if function.get("Runtime") != RUNTIME:
        raise PackageError(
            f"{service.name}: runtime is {function.get('Runtime')!r}, expected {RUNTIME!r}; "
            f"Chalice takes it from the interpreter, so package with Python 3.11"
        )
    if function.get("FunctionName") != FUNCTION_NAME:
        raise PackageError(f"{service.name}: FunctionName must be the stack's name")
    for statement in _role_statements(template):
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if any(str(a).startswith("logs:") for a in actions) and (
            statement.get("Resource") != OWN_LOG_GROUP_ARN
        ):
            raise PackageError(
                f"{service.name}: a logs permission must name only the function's own log "
                f"group, {OWN_LOG_GROUP_ARN['Fn::Sub']} (see .chalice/policy-<stage>.json), "
                f"not {json.dumps(statement.get('Resource'))}"
            )
    unset = sorted(k for k, v in variables.items() if v == PLACEHOLDER)
    if unset:
        raise PackageError(
            f"{service.name}: {', '.join(unset)} still {PLACEHOLDER!r}; "
            f"its resources.json or tools/package.py must wire them"
        )


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
    """Package every service (dependencies first, the order the deploy uses)."""
    root = out_root if out_root is not None else BUILD_DIR / stage
    return [package_service(service, stage, root) for service in services]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, help="output folder (default build/<stage>)")
    args = parser.parse_args(argv)
    try:
        for item in package_all(args.stage, args.out):
            size = item.zip_path.stat().st_size / 1e6
            where = item.directory
            if where.is_relative_to(ROOT):
                where = where.relative_to(ROOT)
            print(
                f"{item.service.name:12} {where}/sam.json + deployment.zip ({size:.1f} MB)"
                f"  {item.seconds:.1f}s"
            )
    except PackageError as exc:
        print(f"package failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
