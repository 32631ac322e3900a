"""The observability stack (infra/monitoring.py), built in a test app against stand-ins of what
the service stacks create: real L2 functions, tables, queues and rules in a stack of their own,
named as tools/topology.py names them, one :class:`Watched` per service.

Every expectation is derived from the stand-ins (a dimension is what CDK resolves the watched
resource's name to in the observability stack, an export of the stand-ins' stack), from
``svckit.metrics.CATALOGUE`` and from the topology, never from the module under test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from infra import monitoring
from infra.monitoring import ObservabilityStack, Watched
from svckit import metrics
from tools import topology
from tools.services import SERVICES, ServiceDef

pytestmark = pytest.mark.deploy

STAGE = "dev"
ALARM = "AWS::CloudWatch::Alarm"
GREATER = "GreaterThanThreshold"


@dataclass
class Built:
    stack: ObservabilityStack
    watched: list[Watched]
    template: Template

    def ref(self, value: Any) -> Any:
        """What ``value`` (a stand-in's name, a token) is in the observability stack's template."""
        return self.stack.resolve(value)

    def functions(self) -> Iterator[tuple[Watched, lambda_.IFunction]]:
        for w in self.watched:
            yield from ((w, f) for f in {**w.functions, **w.relays}.values())


def _function(scope: Stack, name: str) -> lambda_.Function:
    return lambda_.Function(
        scope, name, function_name=name, runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler", code=lambda_.Code.from_inline("def handler(e, c):\n    pass\n"),
    )  # fmt: skip


def _stand_ins(scope: Stack, bus: events.EventBus, service: ServiceDef, stage: str) -> Watched:
    """What a service stack exposes, built as tools/topology.py and resources.json describe it."""
    stack = f"{topology.PROJECT}-{stage}-{service.name.replace('_', '-')}"
    relays = {r.handler: _function(scope, f"{stack}-{r.handler}") for r in topology.RELAYS
              if r.service.name == service.name}  # fmt: skip
    subs = [s for s in topology.SUBSCRIPTIONS if s.service.name == service.name]
    key = dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING)
    return Watched(
        service=service.name, api_name=stack, api_stage="api",
        functions={"api": _function(scope, stack)}
        | {s.handler: _function(scope, f"{stack}-{s.handler}") for s in subs},
        relays=relays,
        tables={t: dynamodb.Table(scope, f"{stack}-{t}", partition_key=key)
                for t in service.tables()},
        queues={s.handler: sqs.Queue(scope, s.queue_name(stage), queue_name=s.queue_name(stage))
                for s in subs},
        dead_letter_queues={
            s.handler: sqs.Queue(scope, s.dead_letter_queue_name(stage),
                                 queue_name=s.dead_letter_queue_name(stage)) for s in subs
        } | {
            f"{r.handler}-failures": sqs.Queue(scope, r.failure_queue_name(stage),
                                               queue_name=r.failure_queue_name(stage))
            for r in topology.RELAYS if r.service.name == service.name
        },
        rules={s.handler: events.Rule(
            scope, s.rule_name(stage), rule_name=s.rule_name(stage), event_bus=bus,
            event_pattern=events.EventPattern(source=[s.source], detail_type=list(s.types)),
        ) for s in subs},
    )  # fmt: skip


def build(alarm_email: str | None = None) -> Built:
    app = App()
    scope = Stack(app, "StandIns")
    bus = events.EventBus(scope, "Bus", event_bus_name=topology.bus_name(STAGE))
    watched = [_stand_ins(scope, bus, service, STAGE) for service in SERVICES]
    stack = ObservabilityStack(app, STAGE, watched, alarm_email=alarm_email)
    return Built(stack, watched, Template.from_stack(stack))


@pytest.fixture(scope="module")
def built() -> Built:
    return build()


def on(namespace: str, name: str, dimensions: dict[str, Any], stat: str) -> dict[str, Any]:
    """An alarm's properties that say it watches exactly this series (its Metrics hold it)."""
    metric = {
        "Namespace": namespace,
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
    }
    return {"Metrics": Match.array_with([Match.object_like(
        {"MetricStat": {"Metric": metric, "Stat": stat, "Period": 300}})])}  # fmt: skip


def assert_alarm(built: Built, series: dict[str, Any], threshold: float, **more: Any) -> None:
    """One alarm on ``series`` going off above ``threshold``, notifying the topic both ways, and
    quiet when the metric is not reported (each of these is reported only when it happens)."""
    topic = built.ref(built.stack.topic.topic_arn)
    built.template.has_resource_properties(ALARM, {
        **series, "Threshold": threshold, "ComparisonOperator": GREATER,
        "TreatMissingData": "notBreaching", "AlarmActions": [topic], "OKActions": [topic], **more,
    })  # fmt: skip


def test_each_api_alarms_on_any_5xx(built: Built) -> None:
    for w in built.watched:
        api = {"ApiName": w.api_name, "Stage": w.api_stage}
        assert_alarm(built, on("AWS/ApiGateway", "5XXError", api, "Sum"), 0)


def test_each_api_alarms_on_p99_latency_in_two_of_three_periods(built: Built) -> None:
    for w in built.watched:
        api = {"ApiName": w.api_name, "Stage": w.api_stage}
        assert_alarm(
            built, on("AWS/ApiGateway", "Latency", api, "p99"), monitoring.API_LATENCY_P99_MS,
            DatapointsToAlarm=2, EvaluationPeriods=3,
        )  # fmt: skip


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_each_function_alarms_on_any_error_and_throttle(built: Built, metric: str) -> None:
    for _, function in built.functions():
        series = on(
            "AWS/Lambda", metric, {"FunctionName": built.ref(function.function_name)}, "Sum"
        )
        assert_alarm(built, series, 0, DatapointsToAlarm=1, EvaluationPeriods=1)


def test_each_relay_alarms_on_iterator_age(built: Built) -> None:
    for w in built.watched:
        for relay in w.relays.values():
            name = {"FunctionName": built.ref(relay.function_name)}
            series = on("AWS/Lambda", "IteratorAge", name, "Maximum")
            assert_alarm(built, series, monitoring.RELAY_ITERATOR_AGE_MS)


def test_only_relays_alarm_on_iterator_age(built: Built) -> None:
    iterator_age = {"Properties": on("AWS/Lambda", "IteratorAge", {}, "Maximum")}
    iterator_age["Properties"]["Metrics"] = Match.array_with([Match.object_like(
        {"MetricStat": {"Metric": {"MetricName": "IteratorAge"}}})])  # fmt: skip
    found = built.template.find_resources(ALARM, iterator_age)
    assert len(found) == len(topology.RELAYS)


@pytest.mark.parametrize("metric", ["ReadThrottleEvents", "WriteThrottleEvents"])
def test_each_table_alarms_on_any_throttled_request(built: Built, metric: str) -> None:
    for w in built.watched:
        for table in w.tables.values():
            name = {"TableName": built.ref(table.table_name)}
            assert_alarm(built, on("AWS/DynamoDB", metric, name, "Sum"), 0)


def test_each_dead_letter_and_relay_failure_queue_alarms_on_any_message(built: Built) -> None:
    for w in built.watched:
        for queue in w.dead_letter_queues.values():
            name = {"QueueName": built.ref(queue.queue_name)}
            series = on("AWS/SQS", "ApproximateNumberOfMessagesVisible", name, "Maximum")
            assert_alarm(built, series, 0)


def test_each_subscription_queue_alarms_on_its_oldest_message(built: Built) -> None:
    for w in built.watched:
        for queue in w.queues.values():
            name = {"QueueName": built.ref(queue.queue_name)}
            series = on("AWS/SQS", "ApproximateAgeOfOldestMessage", name, "Maximum")
            assert_alarm(built, series, monitoring.OLDEST_EVENT_AGE_S)


def evaluate(value: Any, known: dict[str, str]) -> Any:
    """``value`` as CloudFormation would compute it, with ``known`` values of references (by
    their JSON): just the Fn::Select and Fn::Split that take a name out of an ARN."""
    if json.dumps(value, sort_keys=True) in known:
        return known[json.dumps(value, sort_keys=True)]
    if isinstance(value, dict) and "Fn::Select" in value:
        index, items = value["Fn::Select"]
        return evaluate(items, known)[int(index)]
    if isinstance(value, dict) and "Fn::Split" in value:
        delimiter, source = value["Fn::Split"]
        return evaluate(source, known).split(delimiter)
    if isinstance(value, list):
        return [evaluate(item, known) for item in value]
    return f"<unresolved {json.dumps(value)}>" if isinstance(value, dict) else value


def test_each_rule_alarms_on_failed_deliveries_by_its_bus_and_name(built: Built) -> None:
    """The dimensions evaluate to the names the topology gives, from the ARN EventBridge gives a
    rule of a custom bus (a rule's Ref would be ``<bus>|<rule>``, which is no RuleName)."""
    bus, rules = topology.bus_name(STAGE), {k: r for w in built.watched for k, r in w.rules.items()}
    known = {
        json.dumps(built.ref(rules[s.handler].rule_arn), sort_keys=True):
        f"arn:aws:events:us-east-1:123456789012:rule/{bus}/{s.rule_name(STAGE)}"
        for s in topology.SUBSCRIPTIONS
    }  # fmt: skip
    any_names = {"EventBusName": Match.any_value(), "RuleName": Match.any_value()}
    pattern = on("AWS/Events", "FailedInvocations", any_names, "Sum")
    found = set()
    for alarm in built.template.find_resources(ALARM, {"Properties": pattern}).values():
        assert_alarm(built, {"AlarmName": alarm["Properties"]["AlarmName"], **pattern}, 0)
        metric = alarm["Properties"]["Metrics"][0]["MetricStat"]["Metric"]
        found.add(tuple(evaluate(d["Value"], known) for d in metric["Dimensions"]))
    assert found == {(bus, s.rule_name(STAGE)) for s in topology.SUBSCRIPTIONS}


def test_each_subscribed_event_type_alarms_on_p99_lag_with_the_catalogues_dimensions(
    built: Built,
) -> None:
    for sub in topology.SUBSCRIPTIONS:
        for event_type in sub.types:
            values = {"service": sub.service.name, "stage": STAGE, "type": event_type}
            dims = {name: values[name] for name in metrics.EVENT_LAG.dimension_names}
            series = on(metrics.NAMESPACE, metrics.EVENT_LAG.name, dims, "p99")
            assert_alarm(built, series, monitoring.EVENT_LAG_P99_MS)


def test_no_alarm_beyond_those_expected(built: Built) -> None:
    """Two per API, two per function, one per relay, two per table, one per queue of any kind,
    one per rule, one per subscribed event type: nothing duplicated, nothing unaccounted for."""
    expected = sum(
        2 + 2 * len(w.functions | w.relays) + len(w.relays) + 2 * len(w.tables)
        + len(w.queues) + len(w.dead_letter_queues) + len(w.rules)
        for w in built.watched
    ) + sum(len(s.types) for s in topology.SUBSCRIPTIONS)  # fmt: skip
    built.template.resource_count_is(ALARM, expected)


def test_alarm_names_carry_the_stage(built: Built) -> None:
    named = built.template.find_resources(
        ALARM, {"Properties": {"AlarmName": Match.string_like_regexp(f"^shop-{STAGE}-")}}
    )
    assert len(named) == len(built.template.find_resources(ALARM))


def test_the_topic_has_no_subscription_without_an_address(built: Built) -> None:
    built.template.resource_count_is("AWS::SNS::Subscription", 0)


def test_an_address_is_subscribed_to_the_topic() -> None:
    built = build(alarm_email="ops@example.com")
    built.template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "ops@example.com",
        "TopicArn": built.ref(built.stack.topic.topic_arn),
    })  # fmt: skip


def test_the_topic_is_named_after_the_stage(built: Built) -> None:
    built.template.has_resource_properties("AWS::SNS::Topic", {"TopicName": f"shop-{STAGE}-alarms"})


def test_one_dashboard_named_after_the_stage(built: Built) -> None:
    built.template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    built.template.has_resource_properties(
        "AWS::CloudWatch::Dashboard", {"DashboardName": f"shop-{STAGE}"}
    )


def dashboard_expressions(template: Template) -> set[str]:
    """Every metric-math expression of the dashboard. Its body is JSON joined with tokens
    (Fn::Join), which no assertion matcher reads: the tokens are stood in for, then parsed."""
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))
    return {
        line[0]["expression"]
        for widget in body["widgets"]
        for line in widget.get("properties", {}).get("metrics", [])
        if isinstance(line[0], dict) and "expression" in line[0]
    }


def search_of(metric: metrics.Metric) -> re.Pattern[str]:
    """A SEARCH over exactly the metric's dimension set, in this stage."""
    schema = ",".join((metrics.NAMESPACE, *metric.dimension_names))
    query = f'{{{schema}}} MetricName="{metric.name}" stage="{STAGE}"'
    return re.compile(rf"^SEARCH\('{re.escape(query)}', '[^']+', 300\)$")


def test_the_dashboard_graphs_every_catalogue_metric_over_its_exact_dimensions(
    built: Built,
) -> None:
    expressions = dashboard_expressions(built.template)
    missing = [m.name for m in metrics.CATALOGUE
               if not any(search_of(m).match(e) for e in expressions)]  # fmt: skip
    assert missing == []


def test_a_metric_added_to_the_catalogue_is_graphed(monkeypatch: pytest.MonkeyPatch) -> None:
    added = metrics.Metric("OrdersShipped", metrics.COUNT, ("carrier",))
    monkeypatch.setattr(metrics, "CATALOGUE", (*metrics.CATALOGUE, added))
    expressions = dashboard_expressions(build().template)
    assert any(search_of(added).match(e) for e in expressions)


def test_an_event_lag_dimension_set_unlike_the_catalogues_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lag alarms name the catalogue's dimension set: when it changes, the build fails
    rather than alarm on a series nothing emits."""
    changed = metrics.Metric("EventLag", metrics.MILLISECONDS, ("type", "source"))
    monkeypatch.setattr(metrics, "EVENT_LAG", changed)
    with pytest.raises(KeyError, match="EventLag"):
        build()


@pytest.mark.parametrize("query", sorted(monitoring.QUERIES))
def test_each_saved_query_reads_every_functions_log_group(built: Built, query: str) -> None:
    groups = [built.ref(f"/aws/lambda/{f.function_name}") for _, f in built.functions()]
    built.template.has_resource_properties("AWS::Logs::QueryDefinition", {
        "Name": f"shop-{STAGE}/{query}", "QueryString": monitoring.QUERIES[query],
        "LogGroupNames": groups,
    })  # fmt: skip


def test_looked_up_resources_need_no_export() -> None:
    """Watched filled from ``from_*_name`` lookups (what app.py may pass for resources that are
    no L2 construct): the alarm names the function by its stage-derived name (CloudFormation
    cuts it out of the lookup's ARN), and the stack imports nothing from another stack."""
    app = App()
    scope = Stack(app, "Lookups")
    name = f"shop-{STAGE}-gateway-api"
    function = lambda_.Function.from_function_name(scope, "F", name)
    watched = Watched(
        service="gateway_api", api_name=name, api_stage="api", functions={"api": function}
    )
    stack = ObservabilityStack(app, STAGE, [watched])
    template = Template.from_stack(stack)
    resolved = stack.resolve(function.function_name)
    assert name in json.dumps(resolved)
    template.has_resource_properties(
        ALARM, on("AWS/Lambda", "Errors", {"FunctionName": resolved}, "Sum")
    )
    assert "Fn::ImportValue" not in json.dumps(template.to_json())


def test_the_stack_is_named_after_the_stage(built: Built) -> None:
    assert built.stack.stack_name == f"shop-{STAGE}-observability"


def test_cdk_nag_aws_solutions_finds_nothing_unacknowledged(built: Built) -> None:
    report = AwsSolutionsChecks().validate_scope(built.stack)
    found = [(v.rule_name, [r.construct_path for r in v.violating_resources])
             for v in report.violations]  # fmt: skip
    assert found == []
