"""The CDK app: the stage's stacks, in the order a reader (and CloudFormation) meets them.

``cdk synth -c stage=dev`` (``make synth``): the bus stack, one stack per service, the
observability stack last. ``-c localstack=true`` (or ``LOCALSTACK=1``) gives the gateway the
services' URLs in the form LocalStack serves without DNS; ``-c localstackEndpoint=...`` moves it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra import naming
from infra.chalice_app import PACKAGE_DIR, PackagedApp, package_apps
from infra.events import EventsStack
from infra.service import ServiceStack
from tools.services import GATEWAY, PRODUCT, SERVICES, USER

VALIDATION_REPORT = "validation-report.json"  # in the cloud assembly: cdk-nag's and cfn-lint's


@dataclass
class Stage:
    """The stacks of one stage, for the tests and the observability stack to read."""

    name: str
    events: EventsStack
    services: dict[str, ServiceStack] = field(default_factory=dict)

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.events, *self.services.values()]


def stage_of(app: cdk.App) -> str:
    return str(app.node.try_get_context(naming.STAGE_CONTEXT) or naming.DEFAULT_STAGE)


def build(app: cdk.App, packaged: dict[str, PackagedApp] | None = None) -> Stage:
    """Add the stage's stacks to ``app``, packaging the apps first unless ``packaged`` (the
    tests package once and build several apps)."""
    stage = stage_of(app)
    localstack = naming.localstack_requested(app.node.try_get_context(naming.LOCALSTACK_CONTEXT))
    endpoint = None
    if localstack:
        endpoint = str(
            app.node.try_get_context(naming.LOCALSTACK_ENDPOINT_CONTEXT)
            or naming.LOCALSTACK_ENDPOINT
        )
    if packaged is None:
        packaged = package_apps(SERVICES, stage, PACKAGE_DIR / stage)
    built = Stage(stage, EventsStack(app, stage))
    for service in (USER, PRODUCT):
        built.services[service.name] = ServiceStack(
            app, service, stage, packaged[service.name], bus=built.events
        )
    built.services[GATEWAY.name] = ServiceStack(
        app, GATEWAY, stage, packaged[GATEWAY.name],
        upstream_urls={
            service: naming.service_url(built.services[service.name].rest_api_id, endpoint)
            for service in (USER, PRODUCT)
        },
    )  # fmt: skip
    # The observability stack goes here, last: it takes the resources the stacks above expose
    # (each ServiceStack's functions, rest_api_name, tables, queues, dead_letter_queues, rules).
    for stack in built.stacks:
        cdk.Tags.of(stack).add("project", naming.PROJECT)
        cdk.Tags.of(stack).add("stage", stage)
    return built


def add_checks(app: cdk.App) -> None:
    """cdk-nag's AwsSolutions rules on every stack: a synth with an unacknowledged finding fails
    (each acknowledgement sits beside the resource it concerns, with its reason)."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def main() -> int:
    app = cdk.App()
    add_checks(app)
    build(app)
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
