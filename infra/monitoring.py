"""``shop-<stage>-observability``: the alarm topic, the alarms, the dashboard ``shop-<stage>``
and the saved Logs Insights queries, over the other stacks' resources as CDK objects
(:class:`Watched`), so every dimension is a name as CDK resolves it, never one typed here.
cdk-monitoring-constructs' ``MonitoringFacade`` makes the alarms and the dashboard; written here
is what it cannot monitor: the EMF metrics (``svckit.metrics``), rules' ``FailedInvocations``.

Every alarm notifies the topic when it goes off and when it recovers, and treats missing data as
not breaching: each metric is reported only when something happens (a request, a batch, a
throttle); a consumer that stopped altogether is caught by its queue's oldest-message alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aws_cdk as cdk
import cdk_monitoring_constructs as cmc
from aws_cdk import CfnOutput, Duration, Fn, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.events import acknowledge
from svckit import metrics
from tools import topology
from tools.stages import Naming

PERIOD = Duration.minutes(5)  # SQS reports every 5 minutes: one period keeps the graphs aligned
GREATER = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
# The tunable thresholds; every other alarm goes off on a single occurrence.
API_LATENCY_P99_MS, EVENT_LAG_P99_MS = 3000, 60_000
OLDEST_EVENT_AGE_S = 900  # a subscription queue's oldest message
RELAY_ITERATOR_AGE_MS = 300_000  # a relay's oldest record handed to it
# What a graph of an EMF metric shows, by its unit: a count's sum, a duration's percentiles.
STATISTICS = {metrics.COUNT: ("Sum",), metrics.MILLISECONDS: ("p50", "p99")}
# Each alarm's description: what went wrong and where to look, for whoever it wakes up.
WHY = {
    "5xx": "The API answered 5xx: see the saved query errors-by-route.",
    "latency": "The API's p99 latency stayed above the threshold in 2 of 3 periods (one cold "
    "start does not set it off): X-Ray's trace map shows where the time goes.",
    "errors": "The function raised or timed out: see its log group.",
    "throttles": "The function was throttled: its concurrency is spent.",
    "iterator-age": "The relay is behind its stream: it cannot publish and holds its shard "
    "(a partial batch failure, no Lambda error: only this alarm shows it). See its log.",
    "throttled": "DynamoDB throttled requests to the table (on demand: a partition's limit).",
    "oldest": "Events waited in the queue past the threshold: its consumer is not applying them.",
    "dead-letters": "A message waits here: an event a consumer gave up on or EventBridge could "
    "not deliver, or a stream range a relay gave up on (make dlq lists them).",
    "failed-deliveries": "EventBridge gave up delivering an event the rule matched to its queue: "
    "it is in the consumer's dead-letter queue (and the bus's archive).",
    "lag": "The consumer applies events late: p99 from change stored to event applied.",
}
# Saved Logs Insights queries, over every function's log group.
QUERIES = {
    # Every line of one request in every service it went through, in order: the gateway and the
    # service log the same request_id (X-Request-Id, forwarded by the gateway).
    "one-request": "\n".join([
        "fields @timestamp, service, level, message, method, path, status, duration_ms, @log",
        '| filter request_id = "PASTE-THE-REQUEST-ID"', "| sort @timestamp asc", "| limit 10000",
    ]),
    # What failed, where: Powertools' error and warning lines and 5xx answers, by service and
    # route (an event function has no path: its log group stands in). A warning has no status:
    # grouped as "-", never left out for lacking one.
    "errors-by-route": "\n".join([
        'fields @timestamp, service, level, coalesce(status, "-") as answer,'
        " coalesce(path, @log) as route",
        '| filter level in ["ERROR","WARNING"] or status >= 500',
        "| stats count(*) as occurrences, max(@timestamp) as last_seen"
        " by service, route, answer, level",
        "| sort occurrences desc",
    ])}  # fmt: skip


@dataclass(frozen=True)
class Watched:
    """One service's resources, under keys that make the alarms' names (``shop-<stage>-<service>
    -<key>-...``). ``relays`` read streams (an IteratorAge alarm each). A dead-letter queue under
    a queue's key is that queue's; under its own key (a relay's failures) it is watched alone."""

    service: str  # tools/services.py's name: the EMF ``service`` and its subscriptions
    api_name: str  # the REST API's name: API Gateway's ``ApiName`` dimension
    api_stage: str  # Chalice's api_gateway_stage: the ``Stage`` dimension
    functions: Mapping[str, cdk.aws_lambda.IFunction]
    relays: Mapping[str, cdk.aws_lambda.IFunction] = field(default_factory=dict)
    tables: Mapping[str, cdk.aws_dynamodb.ITable] = field(default_factory=dict)
    queues: Mapping[str, cdk.aws_sqs.IQueue] = field(default_factory=dict)
    dead_letter_queues: Mapping[str, cdk.aws_sqs.IQueue] = field(default_factory=dict)
    rules: Mapping[str, cdk.aws_events.IRule] = field(default_factory=dict)  # on the stage's bus


def _alarm(kind: type[Any], why: str, **threshold: Any) -> dict[str, Any]:
    """The facade's alarm map: one alarm (the one severity), missing data not breaching."""
    quiet = cloudwatch.TreatMissingData.NOT_BREACHING
    return {"Critical": kind(**threshold, treat_missing_data_override=quiet,
                             alarm_description_override=WHY[why])}  # fmt: skip


def _never(why: str) -> dict[str, Any]:
    """An alarm on any occurrence at all, of a count the facade compares with >."""
    return _alarm(cmc.ErrorCountThreshold, why, max_error_count=0)


def _dimensions(metric: metrics.Metric, **values: str) -> dict[str, str]:
    """An EMF metric's dimensions, exactly its declared set: if the catalogue's set changes,
    this fails rather than alarm on a series nothing emits."""
    if set(values) != set(metric.dimension_names):
        raise KeyError(f"{metric.name} has the dimensions {metric.dimension_names}")
    return {name: values[name] for name in metric.dimension_names}


def _custom(friendly: str, why: str, threshold: float, namespace: str, name: str, statistic: str,
            label: str, dimensions: dict[str, str]) -> cmc.CustomMetricWithAlarm:  # fmt: skip
    """A metric no library monitoring covers, with its alarm above ``threshold``."""
    metric = cloudwatch.Metric(
        namespace=namespace, metric_name=name, statistic=statistic, period=PERIOD, label=label,
        dimensions_map=dimensions)  # fmt: skip
    alarm = _alarm(cmc.CustomThreshold, why, threshold=threshold, comparison_operator=GREATER)
    return cmc.CustomMetricWithAlarm(alarm_friendly_name=friendly, metric=metric, add_alarm=alarm)


class ObservabilityStack(Stack):
    """``alarm_email`` subscribes an address to the topic (SNS mails it a link to confirm)."""

    def __init__(self, scope: Construct, stage: str, watched: Sequence[Watched],
                 alarm_email: str | None = None) -> None:  # fmt: skip
        name = Naming(stage).observability_stack
        super().__init__(scope, name, stack_name=name)
        self.stage, prefix = stage, f"{topology.PROJECT}-{stage}"
        self.topic = cdk.aws_sns.Topic(
            self, "AlarmTopic", topic_name=f"{prefix}-alarms", display_name=f"{prefix} alarms")
        # Unencrypted, as today: CloudWatch cannot publish to a topic encrypted with the
        # AWS-managed key, and one of our own costs $1 a month for messages that carry only alarm
        # names and states.
        acknowledge(
            self.topic, "AwsSolutions-SNS3", "enforce_ssl adds a topic policy, which replaces "
            "SNS's default one that lets this account's alarms publish; only CloudWatch "
            "publishes here.")  # fmt: skip
        if alarm_email:
            self.topic.add_subscription(cdk.aws_sns_subscriptions.EmailSubscription(alarm_email))
        self.monitoring = cmc.MonitoringFacade(
            self, "Monitoring",
            alarm_factory_defaults=cmc.AlarmFactoryDefaults(
                alarm_name_prefix=prefix, actions_enabled=True, datapoints_to_alarm=1,
                evaluation_periods=1, action=cmc.SnsAlarmActionStrategy(
                    on_alarm_topic=self.topic, on_ok_topic=self.topic)),
            metric_factory_defaults=cmc.MetricFactoryDefaults(period=PERIOD),
            dashboard_factory=cmc.DefaultDashboardFactory(
                self, "Dashboards", dashboard_name_prefix=Naming(stage).dashboard,
                create_summary_dashboard=False, create_alarm_dashboard=False))  # fmt: skip
        for w in watched:
            self._watch(w)
        self._watch_app_metrics({w.service for w in watched})
        functions = [f for w in watched for f in {**w.functions, **w.relays}.values()]
        for query, text in QUERIES.items():  # saved in a folder per stage, ``shop-<stage>/``
            cdk.aws_logs.CfnQueryDefinition(
                self, f"Query-{query}", name=f"{prefix}/{query}", query_string=text,
                log_group_names=[f"/aws/lambda/{f.function_name}" for f in functions])  # fmt: skip
        CfnOutput(self, "AlarmTopicArn", value=self.topic.topic_arn)
        url = f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
        CfnOutput(self, "DashboardUrl", value=f"{url}#dashboards:name={Naming(stage).dashboard}")

    # fmt: off
    def _watch(self, w: Watched) -> None:
        facade = self.monitoring
        # Only its name is read: API Gateway's metrics are keyed by ApiName and Stage.
        api = cdk.aws_apigateway.RestApi.from_rest_api_attributes(
            self, f"{w.service}-api", rest_api_id=w.api_name, root_resource_id="/",
            rest_api_name=w.api_name)
        facade.monitor_api_gateway(
            api=api, api_stage=w.api_stage, alarm_friendly_name=f"{w.service}-restapi",
            human_readable_name=f"{w.service}: API {w.api_name} (stage {w.api_stage})",
            add5_xx_fault_count_alarm=_never("5xx"),
            add_latency_p99_alarm=_alarm(
                cmc.LatencyThreshold, "latency", max_latency=Duration.millis(API_LATENCY_P99_MS),
                datapoints_to_alarm=2, evaluation_periods=3))
        for key, function in {**w.functions, **w.relays}.items():
            facade.monitor_lambda_function(
                lambda_function=function, alarm_friendly_name=f"{w.service}-{key}",
                human_readable_name=f"{w.service} {key}", add_fault_count_alarm=_never("errors"),
                add_throttles_count_alarm=_never("throttles"),
                add_max_iterator_age_alarm=_alarm(
                    cmc.MaxAgeThreshold, "iterator-age", max_age_in_millis=RELAY_ITERATOR_AGE_MS,
                ) if key in w.relays else None)
        for key, table in w.tables.items():
            throttled = _alarm(
                cmc.ThrottledEventsThreshold, "throttled", max_throttled_events_threshold=0)
            facade.monitor_dynamo_table(
                table=table, billing_mode=cdk.aws_dynamodb.BillingMode.PAY_PER_REQUEST,
                alarm_friendly_name=f"{w.service}-{key}", human_readable_name=f"{w.service} {key}",
                add_read_throttled_events_count_alarm=throttled,
                add_write_throttled_events_count_alarm=throttled)
        dead_letters = _alarm(cmc.MaxMessageCountThreshold, "dead-letters", max_message_count=0)
        for key, queue in {**w.queues, **w.dead_letter_queues}.items():
            n = {"alarm_friendly_name": f"{w.service}-{key}", "human_readable_name": key}
            oldest = _alarm(
                cmc.MaxMessageAgeThreshold, "oldest", max_age_in_seconds=OLDEST_EVENT_AGE_S)
            if key in w.queues and key in w.dead_letter_queues:
                facade.monitor_sqs_queue_with_dlq(
                    queue=w.queues[key], add_queue_max_message_age_alarm=oldest, **n,
                    dead_letter_queue=w.dead_letter_queues[key],
                    add_dead_letter_queue_max_size_alarm=dead_letters)
            elif key in w.queues:
                facade.monitor_sqs_queue(queue=queue, add_queue_max_message_age_alarm=oldest, **n)
            else:
                facade.monitor_sqs_queue(queue=queue, add_queue_max_size_alarm=dead_letters, **n)
        if w.rules:
            # A rule on a custom bus is keyed by both names, from its ARN
            # (``...:rule/<bus>/<rule>``): its Ref is ``<bus>|<rule>``, no RuleName.
            arns = {key: Fn.split("/", rule.rule_arn) for key, rule in w.rules.items()}
            failed = [_custom(
                f"{w.service}-{key}", "failed-deliveries", 0, "AWS/Events", "FailedInvocations",
                "Sum", key, {"EventBusName": Fn.select(1, arn), "RuleName": Fn.select(2, arn)},
            ) for key, arn in arns.items()]
            facade.monitor_custom(
                alarm_friendly_name=f"{w.service}-rules",
                human_readable_name=f"{w.service}: EventBridge rules",
                metric_groups=[cmc.CustomMetricGroup(title="Failed deliveries", metrics=failed)])
    # fmt: on

    def _search(self, metric: metrics.Metric, statistic: str) -> cloudwatch.IMetric:
        """Every series of an EMF metric in this stage, whatever its other dimensions' values
        (routes, statuses, types): a SEARCH over its exact dimension set (CloudWatch keeps a
        series per set: one dimension more or less finds nothing). Written out because the
        library's CustomMetricSearch takes an open dimension as an undefined value, which jsii
        cannot pass from Python (None arrives as null, and is refused)."""
        schema = ",".join((metrics.NAMESPACE, *metric.dimension_names))
        query = f'{{{schema}}} MetricName="{metric.name}" stage="{self.stage}"'
        return cloudwatch.MathExpression(
            expression=f"SEARCH('{query}', '{statistic}', {PERIOD.to_seconds()})",
            using_metrics={}, label=statistic, period=PERIOD)  # fmt: skip

    def _watch_app_metrics(self, services: set[str]) -> None:
        """A graph per catalogue metric; a p99 lag alarm per watched consumer and event type."""
        groups = [cmc.CustomMetricGroup(
            title=f"{m.name} ({m.unit.value}) by {', '.join(m.dimensions) or 'service'}",
            metrics=[self._search(m, statistic) for statistic in STATISTICS[m.unit]],
        ) for m in metrics.CATALOGUE]
        lag = metrics.EVENT_LAG
        lags = [_custom(
            f"{sub.service.name}-{event_type}-event-lag", "lag", EVENT_LAG_P99_MS,
            metrics.NAMESPACE, lag.name, "p99", f"{sub.service.name} {event_type}",
            _dimensions(lag, service=sub.service.name, stage=self.stage, type=event_type),
        ) for sub in topology.SUBSCRIPTIONS if sub.service.name in services
            for event_type in sub.types]
        groups.append(cmc.CustomMetricGroup(title="Event lag p99 (ms)", metrics=lags))
        self.monitoring.monitor_custom(
            alarm_friendly_name="app", metric_groups=groups,
            human_readable_name="The services' own metrics (EMF, namespace shop)")  # fmt: skip
