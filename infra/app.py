"""The CDK app (``cdk synth -c stage=dev``, ``make synth``): the bus stack, a stack per service,
the observability stack last. ``-c localstack=true`` (or ``LOCALSTACK=1``) gives the gateway the
services' URLs in the form LocalStack serves without DNS; ``-c localstackEndpoint=...`` moves it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.events import EventsStack
from infra.monitoring import ObservabilityStack, Watched
from infra.packaging import PACKAGE_DIR, PackagedApp, function_id, package_apps
from infra.service import ServiceStack
from tools import stages, topology
from tools.services import GATEWAY, PRODUCT, SERVICES, USER
from tools.stages import Naming

ALARM_EMAIL_CONTEXT = "alarmEmail"  # -c alarmEmail=ops@example.com, or ALARM_EMAIL
VALIDATION_REPORT = "validation-report.json"  # in the cloud assembly: cdk-nag's and cfn-lint's
API_STAGE = "api"  # api_gateway_stage of every .chalice/config.json: the URL's path


@dataclass
class Stage:
    """The stacks of one stage, for the tests to read."""

    events: EventsStack
    services: dict[str, ServiceStack]
    observability: ObservabilityStack

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.events, *self.services.values(), self.observability]


def watched(stack: ServiceStack) -> Watched:
    """A service stack as the observability stack watches it: the stream relays apart (they get
    the IteratorAge alarm), each dead-letter queue under its queue's key (watched as a pair)."""
    relays = {function_id(r.handler) for r in topology.relays_of(stack.service)}
    subscriptions = topology.subscriptions_of(stack.service)
    paired = {s.dead_letter_queue: s.queue for s in subscriptions}
    return Watched(
        service=stack.service.name, api_name=stack.stack_name, api_stage=API_STAGE,
        functions={k: f for k, f in stack.functions.items() if k not in relays},
        relays={k: f for k, f in stack.functions.items() if k in relays},
        tables=stack.tables, queues=stack.queues,
        dead_letter_queues={paired.get(k, k): q for k, q in stack.dead_letter_queues.items()},
        rules={s.queue: stack.rules[s.rule] for s in subscriptions})  # fmt: skip


def service_url(rest_api_id: str, localstack_endpoint: str | None) -> str:
    """A service's API base URL for another stack, from its id: Chalice's ``EndpointURL`` output,
    passed across stacks, is an ``Fn::Sub`` naming the other stack's ``${RestAPI}``, refused. On
    LocalStack the path-style form, which needs no DNS (``<id>.execute-api.localhost.localstack
    .cloud`` does not resolve here) and no certificate (https failed with SSLError)."""
    if localstack_endpoint is not None:
        base = f"{localstack_endpoint.rstrip('/')}/_aws/execute-api/"
        return cdk.Fn.join("", [base, rest_api_id, f"/{API_STAGE}/"])
    url = "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/" + API_STAGE + "/"
    return cdk.Fn.sub(url, {"Api": rest_api_id})


def build(app: cdk.App, packaged: dict[str, PackagedApp] | None = None) -> Stage:
    """Add the stage's stacks to ``app``, packaging the apps first unless ``packaged`` (the
    tests package once and build several apps)."""
    context = app.node.try_get_context
    stage = str(context(stages.STAGE_CONTEXT) or stages.DEFAULT_STAGE)
    stages.Naming(stage).require_defined()
    asked = {str(context(stages.LOCALSTACK_CONTEXT)), os.environ.get("LOCALSTACK", "")}
    endpoint = None
    if {a.lower() for a in asked} & {"true", "1", "yes"}:
        endpoint = str(context(stages.LOCALSTACK_ENDPOINT_CONTEXT) or stages.LOCALSTACK_ENDPOINT)
    packaged = packaged or package_apps(SERVICES, stage, PACKAGE_DIR / stage)
    bus, data = EventsStack(app, stage), (USER, PRODUCT)
    services = {s.name: ServiceStack(app, s, stage, packaged[s.name], bus=bus) for s in data}
    urls = {s: service_url(services[s.name].rest_api_id, endpoint) for s in data}
    gateway = ServiceStack(app, GATEWAY, stage, packaged[GATEWAY.name], upstream_urls=urls)
    services[GATEWAY.name] = gateway
    # Last up, first down: it watches every stack above.
    email = context(ALARM_EMAIL_CONTEXT) or os.environ.get("ALARM_EMAIL") or None
    watching = [watched(s) for s in services.values()]
    built = Stage(bus, services, ObservabilityStack(app, stage, watching, alarm_email=email))
    for stack in built.stacks:
        for key, value in Naming(stage).tags.items():
            cdk.Tags.of(stack).add(key, value)
    return built


def add_checks(app: cdk.App) -> None:
    """cdk-nag's AwsSolutions rules on every stack: an unacknowledged finding fails the synth
    (each acknowledgement sits beside its resource, with its reason)."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


if __name__ == "__main__":
    app = cdk.App()
    add_checks(app)
    build(app)
    app.synth()
