"""The stage's observability stack, ``shop-<stage>-observability``: one SNS topic for alarms, the
alarms, one CloudWatch dashboard and the Logs Insights queries, as CloudFormation generated from
the same definitions as the stacks it watches.

It is a stack of its own, deployed last and destroyed first (``tools/deploy.py``), because it
watches every other stack: the APIs, the functions, the tables, the queues. What it needs of them
it gets in one of two ways, never from a name typed here:

* names the stacks derive from the stage, derived here the same way: each function is named
  ``${AWS::StackName}`` plus its suffix (``tools/package.py``), each REST API is named after its
  stack (the common fragment of ``tools/package.py`` sets it: ``chalice package`` would name
  every stage's API after the app, and API Gateway's metrics are keyed by that name), each queue,
  rule and the bus have ``tools/topology.py``'s names;
* names CloudFormation makes up (the tables): the service stacks output them (``table_output``)
  and the deploy passes them in as this stack's parameters (``parameter_values``).

The services' own metrics are CloudWatch embedded metric format (EMF) lines in their logs, in
namespace ``shop`` (:data:`APP_METRICS`: names, units and the exact dimension set of each, the
contract with the code that emits them, ``svckit``). An alarm or a dashboard line on such a
metric must name exactly its dimension set: CloudWatch keeps one series per set, and a query
with one dimension more or less finds nothing, silently.

``tests/deploy/test_observability.py`` resolves every alarm's and every dashboard line's
dimensions against the packaged templates and the topology, and the orchestration tests deploy
the stack on moto after the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svckit import events
from svckit import metrics as app_metrics
from tools import eventstack, topology
from tools.services import DATA_SERVICES, GATEWAY, PRODUCT, SERVICES, USER, ServiceDef

STACK_PART = "observability"  # the stack is shop-<stage>-observability
TEMPLATE_FILE = "template.json"  # build/<stage>/observability/template.json, by make package
NAMESPACE = app_metrics.NAMESPACE  # the services' EMF namespace: "shop"
TOPIC = "AlarmTopic"
EMAIL_SUBSCRIPTION = "AlarmEmailSubscription"
DASHBOARD = "Dashboard"
HAS_EMAIL = "HasAlarmEmail"
ALARM_EMAIL_PARAMETER = "AlarmEmail"
LATENCY_PARAMETER = "ApiLatencyP99Milliseconds"
EVENT_LAG_PARAMETER = "EventLagP99Milliseconds"
QUEUE_AGE_PARAMETER = "OldestEventAgeSeconds"
ITERATOR_AGE_PARAMETER = "RelayIteratorAgeMilliseconds"
PERIOD = 300  # seconds: SQS reports every 5 minutes; one period for everything keeps them aligned
ALARM_METRICS_LIMIT = 10  # metrics (and expressions) CloudWatch allows in one alarm
LOG_LEVELS_OF_ERRORS = ("ERROR", "WARNING")  # Powertools' level names (svckit.logs)

# --- the services' own metrics (EMF) ------------------------------------------------------------

SERVICE = "service"
STAGE = "stage"
TARGET = "target"
TYPE = "type"
SERVICE_DIMENSIONS = (SERVICE, STAGE)


@dataclass(frozen=True)
class AppMetric:
    """A metric the services emit in EMF: its name, unit and exact dimension set (from
    ``svckit.metrics.CATALOGUE``, the code's own declaration), and which services emit it (the
    values its ``service`` dimension takes)."""

    name: str
    unit: str
    dimensions: tuple[str, ...]
    services: tuple[str, ...]


_ALL = tuple(s.name for s in SERVICES)
_RELAYING = tuple(sorted({r.service.name for r in topology.RELAYS}))
_CONSUMING = tuple(sorted({s.service.name for s in topology.SUBSCRIPTIONS}))
# Which services emit each metric of the catalogue (tests/deploy/test_observability.py checks
# this against the code's metrics.add calls): every request, cold start and event metric comes
# from svckit, so from every service that serves requests, relays or consumes.
EMITTERS: dict[str, tuple[str, ...]] = {
    "Requests": _ALL,
    "Latency": _ALL,
    "ColdStart": _ALL,
    "UsersRegistered": (USER.name,),
    "UsersDeleted": (USER.name,),
    "LoginsFailed": (USER.name,),
    "LoginsThrottled": (USER.name,),
    "PointsGranted": (USER.name,),
    "ProductsAdded": (PRODUCT.name,),
    "ProductsDeleted": (PRODUCT.name,),
    "UpstreamLatency": (GATEWAY.name,),
    "UpstreamFailures": (GATEWAY.name,),
    "EventsRelayed": _RELAYING,
    "EventsApplied": _CONSUMING,
    "EventsSkipped": _CONSUMING,
    "EventsFailed": _CONSUMING,
    "EventsDeadLettered": _CONSUMING,
    "EventLag": _CONSUMING,
}


def _app_metrics() -> dict[str, AppMetric]:
    unplaced = sorted({m.name for m in app_metrics.CATALOGUE} - set(EMITTERS))
    if unplaced:
        raise KeyError(f"tools/observability.EMITTERS does not say who emits {unplaced}")
    return {
        m.name: AppMetric(m.name, str(m.unit.value), m.dimension_names, EMITTERS[m.name])
        for m in app_metrics.CATALOGUE
    }


APP_METRICS = _app_metrics()
UPSTREAM_TARGETS = tuple(s.name for s in SERVICES if s.url_env)  # the gateway's upstreams
# The event types each source announces (docs/events.md): what a relay's EventsRelayed carries.
PUBLISHED_TYPES: dict[str, tuple[str, ...]] = {
    events.USER_SOURCE: (events.USER_REGISTERED, events.USER_DELETED),
    events.PRODUCT_SOURCE: (events.PRODUCT_ADDED, events.PRODUCT_DELETED),
}
EVENT_TYPES = tuple(t for types in PUBLISHED_TYPES.values() for t in types)


def relayed_types(service: ServiceDef) -> tuple[str, ...]:
    """The event types ``service``'s relays publish (its ``EventsRelayed`` series)."""
    return tuple(t for r in topology.relays_of(service) for t in PUBLISHED_TYPES[r.source])


def consumed_types(service: ServiceDef) -> tuple[str, ...]:
    """The event types ``service``'s consumers receive (their applied/lag series)."""
    return tuple(t for s in topology.subscriptions_of(service) for t in s.types)


def event_types(metric: str, service: ServiceDef) -> tuple[str, ...]:
    """The ``type`` values an event metric of ``service`` takes (svckit.events): a relay's
    published types; a consumer's subscribed types, plus ``unreadable`` for a message that is no
    event (it fails, and is dead-lettered at last) and ``other`` for a type it has no handler
    for (skipped)."""
    if metric == "EventsRelayed":
        return relayed_types(service)
    subscribed = consumed_types(service)
    if metric in ("EventsFailed", "EventsDeadLettered"):
        return (*subscribed, events.UNREADABLE)
    if metric == "EventsSkipped":
        return (*subscribed, events.OTHER_TYPE)
    return subscribed


# --- what the other stacks create, named as they name it ------------------------------------


def stack_name(stage: str) -> str:
    return eventstack.stack_name(stage, STACK_PART)


def camel(name: str) -> str:
    """``user_api`` -> ``UserApi``: for parameter names and logical ids."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))


def table_output(logical_id: str) -> str:
    """The output of a service stack that holds the name of its table ``logical_id``
    (``TableName`` for the main table, ``<LogicalId>Name`` for the others); tools/package.py
    adds one for every table."""
    return "TableName" if logical_id == "Table" else f"{logical_id}Name"


def api_name(service: ServiceDef, stage: str) -> str:
    """The REST API's name, and so its ``ApiName`` in API Gateway's metrics: its stack's."""
    return eventstack.service_stack_name(service, stage)


def api_stage(service: ServiceDef) -> str:
    """The API Gateway stage of the service's API (the metrics' ``Stage``), Chalice's
    ``api_gateway_stage``."""
    return str(service.config().get("api_gateway_stage", "api"))


@dataclass(frozen=True)
class Function:
    service: ServiceDef
    logical_id: str  # in the service's template
    name: str  # as the stack names it

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"


def functions(stage: str, services: Iterable[ServiceDef] = SERVICES) -> list[Function]:
    """Every function of the stage: the API's (named after its stack) and each event function
    (the stack's name plus ``-<handler>``), as tools/package.py names them."""
    found = []
    for service in services:
        stack = eventstack.service_stack_name(service, stage)
        found.append(Function(service, eventstack.API_FUNCTION, stack))
        for logical_id, handler in eventstack.event_functions(service).items():
            found.append(Function(service, logical_id, stack + eventstack.function_suffix(handler)))
    return found


# The DynamoDB operations each table receives from the service's code, as CloudWatch's
# ``Operation`` dimension names them (the API's operation, not IAM's action: a transaction is
# ``TransactWriteItems`` on every table it writes, though IAM authorises its items as
# UpdateItem/PutItem). ThrottledRequests has one series per table and operation, so the alarm
# sums exactly these; tests/deploy/test_observability.py checks them against the code.
TABLE_OPERATIONS: dict[tuple[str, str], tuple[str, ...]] = {
    # register, read, promote and rehash, delete, list; points (update_once, and the consumer's
    # apply_once) are transactions.
    (USER.name, "Table"): (
        "PutItem", "GetItem", "UpdateItem", "DeleteItem", "Scan", "TransactWriteItems",
    ),
    (USER.name, "LoginAttemptsTable"): ("BatchGetItem", "UpdateItem"),
    (USER.name, topology.PROCESSED_EVENTS_TABLE): ("TransactWriteItems",),  # apply/record_once
    (PRODUCT.name, "Table"): ("PutItem", "GetItem", "Scan", "Query", "DeleteItem"),
    (PRODUCT.name, "RevokedAccountsTable"): ("PutItem", "GetItem"),
    # was_applied, then record_once
    (PRODUCT.name, topology.PROCESSED_EVENTS_TABLE): ("GetItem", "TransactWriteItems"),
}  # fmt: skip


@dataclass(frozen=True)
class Table:
    service: ServiceDef
    logical_id: str
    operations: tuple[str, ...]

    @property
    def output(self) -> str:
        """The service stack's output holding its name."""
        return table_output(self.logical_id)

    @property
    def parameter(self) -> str:
        """This stack's parameter that receives that output."""
        return camel(self.service.name) + self.output

    @property
    def name_ref(self) -> dict[str, str]:
        return {"Ref": self.parameter}


def tables(services: Iterable[ServiceDef] = DATA_SERVICES) -> list[Table]:
    """Every table of the data services, with the operations its code makes on it. A table
    without an entry in TABLE_OPERATIONS is an error: its throttling would go unwatched."""
    found = []
    for service in services:
        for logical_id in service.tables():
            key = (service.name, logical_id)
            if key not in TABLE_OPERATIONS:
                raise KeyError(
                    f"{service.name}'s table {logical_id} has no entry in "
                    "tools/observability.TABLE_OPERATIONS (the operations its code makes)"
                )
            found.append(Table(service, logical_id, TABLE_OPERATIONS[key]))
    return found


@dataclass(frozen=True)
class Queue:
    service: ServiceDef
    logical_id: str  # in the service's template
    name: str  # tools/topology.py's, which the stack gives it
    kind: str  # "subscription", "dead-letters" or "relay-failures"


def relay_functions(stage: str) -> list[Function]:
    """The functions that read a table stream (the relays): what IteratorAge is reported for."""
    relays = {(r.service.name, eventstack.function_id(r.handler)) for r in topology.RELAYS}
    return [f for f in functions(stage) if (f.service.name, f.logical_id) in relays]


@dataclass(frozen=True)
class Rule:
    """A subscription's rule on the stage's bus: EventBridge's metrics for a rule of a custom
    bus carry both names (``EventBusName`` and ``RuleName``; ``RuleName`` alone is the default
    bus's)."""

    subscription: topology.Subscription
    name: str  # tools/topology.py's, which the stack gives it
    bus: str  # the bus stack's bus, topology.bus_name

    @property
    def service(self) -> ServiceDef:
        return self.subscription.service


def rules(stage: str) -> list[Rule]:
    return [Rule(s, s.rule_name(stage), topology.bus_name(stage)) for s in topology.SUBSCRIPTIONS]


def queues(stage: str) -> list[Queue]:
    found = []
    for relay in topology.RELAYS:
        name = relay.failure_queue_name(stage)
        found.append(Queue(relay.service, relay.failure_queue, name, "relay-failures"))
    for sub in topology.SUBSCRIPTIONS:
        found.append(Queue(sub.service, sub.queue, sub.queue_name(stage), "subscription"))
        name = sub.dead_letter_queue_name(stage)
        found.append(Queue(sub.service, sub.dead_letter_queue, name, "dead-letters"))
    return found


# --- the stack's inputs -----------------------------------------------------------------------


def parameters() -> dict[str, Any]:
    """What the stack takes: the alarm address (optional), the thresholds (parameters, so an
    operator can tune a stage's alarms with a stack update rather than a code change), and each
    table's name, which only the service stacks know."""
    declared: dict[str, Any] = {
        ALARM_EMAIL_PARAMETER: {
            "Type": "String",
            "Default": "",
            "AllowedPattern": r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$",
            "ConstraintDescription": "an e-mail address, or empty for none",
            "Description": "Where the alarms are mailed (SNS asks the address to confirm first); "
            "empty: no subscription, the topic only.",
        },
        LATENCY_PARAMETER: {
            "Type": "Number",
            "Default": 3000,
            "MinValue": 1,
            "Description": "p99 of an API's latency (ms) above which its alarm goes off.",
        },
        EVENT_LAG_PARAMETER: {
            "Type": "Number",
            "Default": 60000,
            "MinValue": 1,
            "Description": "p99 of a consumer's event lag (ms, change stored to applied) above "
            "which its alarm goes off.",
        },
        QUEUE_AGE_PARAMETER: {
            "Type": "Number",
            "Default": 900,
            "MinValue": 60,
            "Description": "Age (s) of the oldest message waiting in a subscription queue above "
            "which its alarm goes off: a consumer that stopped applying.",
        },
        ITERATOR_AGE_PARAMETER: {
            "Type": "Number",
            "Default": 300000,
            "MinValue": 1000,
            "Description": "Age (ms) of the oldest record in a relay's batch (Lambda's "
            "IteratorAge, maximum over 5 minutes) above which its alarm goes off: a relay "
            "holding its shard.",
        },
    }
    for table in tables():
        declared[table.parameter] = {
            "Type": "String",
            "Description": f"{table.service.name}'s {table.logical_id}: its stack's output "
            f"{table.output} (set by tools/deploy.py)",
        }
    return declared


def parameter_values(
    outputs: Mapping[str, Mapping[str, str]], alarm_email: str | None
) -> dict[str, str | None]:
    """This stack's parameters from the service stacks' outputs (``outputs``: by service name).
    ``alarm_email`` None keeps what the stack has (tools.deploy.Stacks); "" removes it."""
    values: dict[str, str | None] = {ALARM_EMAIL_PARAMETER: alarm_email}
    for table in tables():
        produced = outputs.get(table.service.name, {})
        if table.output not in produced:
            raise KeyError(f"{table.service.name}'s stack has no output {table.output}")
        values[table.parameter] = produced[table.output]
    return values


# --- alarms -------------------------------------------------------------------------------------


def _ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def _dimensions(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"Name": name, "Value": value} for name, value in values.items()]


def _alarm(
    name: str,
    description: str,
    treat_missing_data: str,
    threshold: Any,
    comparison: str,
    evaluation_periods: int = 1,
    datapoints_to_alarm: int | None = None,
    **metric: Any,
) -> dict[str, Any]:
    """One alarm that notifies the topic when it goes off and when it recovers.

    ``treat_missing_data`` is given by every caller, never left to CloudWatch's default
    (``missing``, which leaves an alarm in INSUFFICIENT_DATA whenever nothing happens)."""
    properties: dict[str, Any] = {
        "AlarmName": name,
        "AlarmDescription": description,
        "ActionsEnabled": True,
        "AlarmActions": [_ref(TOPIC)],
        "OKActions": [_ref(TOPIC)],
        "ComparisonOperator": comparison,
        "Threshold": threshold,
        "EvaluationPeriods": evaluation_periods,
        "TreatMissingData": treat_missing_data,
        **metric,
    }
    if datapoints_to_alarm is not None:
        properties["DatapointsToAlarm"] = datapoints_to_alarm
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": properties}


# Why each kind of alarm treats missing data as it does (also in its description, for whoever is
# woken up by it).
_NO_TRAFFIC = (
    "No data means no requests in the period, which is not a failure: missing data is "
    "notBreaching."
)
_NO_INVOCATIONS = (
    "Lambda reports nothing for a period without invocations: missing data is notBreaching."
)
_NO_THROTTLES = (
    "DynamoDB reports ThrottledRequests only when a request is throttled: missing data is "
    "notBreaching."
)
_EMPTY_QUEUE = (
    "SQS stops reporting a queue that has been empty and unused for hours; a queue holding a "
    "message is active and reported: missing data is notBreaching."
)
_NO_BATCHES = (
    "Lambda reports IteratorAge only when it hands the relay a batch, retries included; a "
    "stream with nothing new reports nothing: missing data is notBreaching."
)
_NO_FAILED_DELIVERIES = (
    "EventBridge reports FailedInvocations only when it is not zero: missing data is "
    "notBreaching."
)
_NO_EVENTS = (
    "No data means no event was applied in the period; a consumer that stopped altogether is "
    "caught by its queue's oldest-message alarm instead: missing data is notBreaching."
)


def _api_alarms(stage: str) -> dict[str, Any]:
    resources = {}
    for service in SERVICES:
        dims = _dimensions({"ApiName": api_name(service, stage), "Stage": api_stage(service)})
        base = camel(service.name)
        name = api_name(service, stage)
        resources[f"{base}Api5XXErrorAlarm"] = _alarm(
            f"{name}-api-5xx",
            f"{service.name}'s API answered 5xx (its function failed, timed out or was "
            f"throttled, or the gateway's upstream failed). Look at the dashboard "
            f"{dashboard_name(stage)} and the saved query errors-by-route. {_NO_TRAFFIC}",
            "notBreaching",
            1,
            "GreaterThanOrEqualToThreshold",
            Namespace="AWS/ApiGateway",
            MetricName="5XXError",
            Dimensions=dims,
            Statistic="Sum",
            Period=PERIOD,
        )
        resources[f"{base}ApiLatencyP99Alarm"] = _alarm(
            f"{name}-api-latency-p99",
            f"{service.name}'s API p99 latency stayed above the threshold for two of three "
            f"periods (one slow cold start does not set it off). X-Ray's trace map shows "
            f"where the time goes. {_NO_TRAFFIC}",
            "notBreaching",
            _ref(LATENCY_PARAMETER),
            "GreaterThanThreshold",
            evaluation_periods=3,
            datapoints_to_alarm=2,
            Namespace="AWS/ApiGateway",
            MetricName="Latency",
            Dimensions=dims,
            ExtendedStatistic="p99",
            Period=PERIOD,
        )
    return resources


def _function_alarms(stage: str) -> dict[str, Any]:
    resources = {}
    for function in functions(stage):
        base = camel(function.service.name) + function.logical_id
        dims = _dimensions({"FunctionName": function.name})
        for metric, what in (
            ("Errors", "raised or timed out (see its log group)"),
            ("Throttles", "was throttled (its reserved concurrency is spent)"),
        ):
            resources[f"{base}{metric}Alarm"] = _alarm(
                f"{function.name}-lambda-{metric.lower()}",
                f"Lambda function {function.name} {what}. {_NO_INVOCATIONS}",
                "notBreaching",
                1,
                "GreaterThanOrEqualToThreshold",
                Namespace="AWS/Lambda",
                MetricName=metric,
                Dimensions=dims,
                Statistic="Sum",
                Period=PERIOD,
            )
    return resources


def _relay_alarms(stage: str) -> dict[str, Any]:
    """A relay that cannot publish a record reports it failed (a partial batch failure, not a
    Lambda error: its Errors alarm stays quiet) and Lambda retries from it until the record is
    too old (MaximumRetryAttempts -1): the shard is held, and only its IteratorAge shows it."""
    resources = {}
    by_function = {(r.service.name, eventstack.function_id(r.handler)): r for r in topology.RELAYS}
    for function in relay_functions(stage):
        relay = by_function[(function.service.name, function.logical_id)]
        hours = relay.maximum_record_age_seconds // 3600
        resources[f"{camel(function.service.name)}{function.logical_id}IteratorAgeAlarm"] = _alarm(
            f"{function.name}-iterator-age",
            f"The relay {function.name} is behind its table's stream: the oldest record of a "
            f"batch it was handed was older than the threshold. A relay that cannot publish "
            f"(the bus refuses or is unreachable, a record it cannot map) holds its shard and is "
            f"retried until its records are {hours} h old; then the batch's range goes to "
            f"{relay.failure_queue_name(stage)} and the shard moves on. Its log says what fails. "
            f"{_NO_BATCHES}",
            "notBreaching",
            _ref(ITERATOR_AGE_PARAMETER),
            "GreaterThanThreshold",
            Namespace="AWS/Lambda",
            MetricName="IteratorAge",
            Dimensions=_dimensions({"FunctionName": function.name}),
            Statistic="Maximum",
            Period=PERIOD,
        )
    return resources


def _rule_alarms(stage: str) -> dict[str, Any]:
    resources = {}
    for rule in rules(stage):
        sub = rule.subscription
        resources[f"{camel(rule.service.name)}{sub.rule}FailedInvocationsAlarm"] = _alarm(
            f"{rule.name}-failed-invocations",
            f"EventBridge could not deliver an event matched by {rule.name} to "
            f"{sub.queue_name(stage)}: after a day of retries, or at once for an error no retry "
            f"fixes (the queue's policy refuses, the queue is gone). It dead-letters the event "
            f"into {sub.dead_letter_queue_name(stage)} (make dlq lists it, make dlq-replay sends "
            f"it to the queue); if that fails too, the event is lost to the consumer (the bus's "
            f"archive still has it). {_NO_FAILED_DELIVERIES}",
            "notBreaching",
            1,
            "GreaterThanOrEqualToThreshold",
            Namespace="AWS/Events",
            MetricName="FailedInvocations",
            Dimensions=_dimensions({"EventBusName": rule.bus, "RuleName": rule.name}),
            Statistic="Sum",
            Period=PERIOD,
        )
    return resources


def _table_alarms(stage: str) -> dict[str, Any]:
    """One alarm per table over its ThrottledRequests of every operation its code makes (metric
    math): the metric has a series per operation and none for the table as a whole."""
    resources = {}
    for table in tables():
        if len(table.operations) + 1 > ALARM_METRICS_LIMIT:
            raise ValueError(f"{table.logical_id}: too many operations for one alarm")
        metrics: list[dict[str, Any]] = [
            {
                "Id": f"m{index}",
                "Label": operation,
                "ReturnData": False,
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/DynamoDB",
                        "MetricName": "ThrottledRequests",
                        "Dimensions": _dimensions(
                            {"TableName": table.name_ref, "Operation": operation}
                        ),
                    },
                    "Period": PERIOD,
                    "Stat": "Sum",
                },
            }
            for index, operation in enumerate(table.operations)
        ]
        metrics.append(
            {
                "Id": "throttled",
                "Label": "ThrottledRequests, every operation",
                "Expression": "SUM(FILL(METRICS(), 0))",
                "ReturnData": True,
            }
        )
        stack = eventstack.service_stack_name(table.service, stage)
        dashed = re.sub(r"(?<!^)(?=[A-Z])", "-", table.logical_id).lower()
        resources[f"{camel(table.service.name)}{table.logical_id}ThrottlesAlarm"] = _alarm(
            f"{stack}-{dashed}-dynamodb-throttles",
            f"DynamoDB throttled requests to {table.service.name}'s {table.logical_id} "
            f"({', '.join(table.operations)}). {_NO_THROTTLES}",
            "notBreaching",
            1,
            "GreaterThanOrEqualToThreshold",
            Metrics=metrics,
        )
    return resources


def _queue_alarms(stage: str) -> dict[str, Any]:
    resources = {}
    for queue in queues(stage):
        base = camel(queue.service.name) + queue.logical_id
        dims = _dimensions({"QueueName": queue.name})
        if queue.kind == "subscription":
            resources[f"{base}OldestMessageAlarm"] = _alarm(
                f"{queue.name}-oldest-message-age",
                f"Events have waited in {queue.name} longer than the threshold: its consumer "
                f"is not applying them (the queue keeps them "
                f"{topology.QUEUE_RETENTION_SECONDS // 86400} days). {_EMPTY_QUEUE}",
                "notBreaching",
                _ref(QUEUE_AGE_PARAMETER),
                "GreaterThanThreshold",
                Namespace="AWS/SQS",
                MetricName="ApproximateAgeOfOldestMessage",
                Dimensions=dims,
                Statistic="Maximum",
                Period=PERIOD,
            )
            continue
        what = (
            "a consumer gave up on an event, or EventBridge could not deliver one to the "
            "consumer's queue (make dlq lists it, make dlq-replay sends it back)"
            if queue.kind == "dead-letters"
            else "a relay gave up on a stream batch (make dlq names its shard and range)"
        )
        resources[f"{base}MessagesAlarm"] = _alarm(
            f"{queue.name}-messages",
            f"{queue.name} holds a message: {what}. {_EMPTY_QUEUE}",
            "notBreaching",
            0,
            "GreaterThanThreshold",
            Namespace="AWS/SQS",
            MetricName="ApproximateNumberOfMessagesVisible",
            Dimensions=dims,
            Statistic="Maximum",
            Period=PERIOD,
        )
    return resources


def _event_lag_alarms(stage: str) -> dict[str, Any]:
    resources = {}
    lag = APP_METRICS["EventLag"]
    for service in DATA_SERVICES:
        for event_type in consumed_types(service):
            values = {SERVICE: service.name, STAGE: stage, TYPE: event_type}
            stack = eventstack.service_stack_name(service, stage)
            resources[f"{camel(service.name)}{event_type}EventLagAlarm"] = _alarm(
                f"{stack}-{event_type}-event-lag-p99",
                f"{service.name} applies {event_type} events late: p99 from the change being "
                f"stored to the event being applied is above the threshold. {_NO_EVENTS}",
                "notBreaching",
                _ref(EVENT_LAG_PARAMETER),
                "GreaterThanThreshold",
                Namespace=NAMESPACE,
                MetricName=lag.name,
                Dimensions=_dimensions({d: values[d] for d in lag.dimensions}),
                ExtendedStatistic="p99",
                Period=PERIOD,
            )
    return resources


def alarms(stage: str) -> dict[str, Any]:
    """Every alarm of the stage, by logical id."""
    return {
        **_api_alarms(stage),
        **_function_alarms(stage),
        **_relay_alarms(stage),
        **_rule_alarms(stage),
        **_table_alarms(stage),
        **_queue_alarms(stage),
        **_event_lag_alarms(stage),
    }


# --- the dashboard ------------------------------------------------------------------------------

_REGION = "${AWS::Region}"  # resolved by the Fn::Sub around the dashboard's body
GRID = 24  # a dashboard row is 24 units wide


def dashboard_name(stage: str) -> str:
    return f"{topology.PROJECT}-{stage}"


def _metric(namespace: str, name: str, dims: Mapping[str, Any], **options: Any) -> list[Any]:
    line: list[Any] = [namespace, name]
    for key, value in dims.items():
        line += [key, value]
    if options:
        line.append(options)
    return line


def _search(metric: AppMetric, stat: str, **values: str) -> dict[str, Any]:
    """A dashboard line for every series of an EMF metric whose values are not known in advance
    (routes, statuses): a SEARCH over its exact dimension set, narrowed by ``values``."""
    schema = ",".join((NAMESPACE, *metric.dimensions))
    terms = " ".join(f'{key}="{value}"' for key, value in values.items())
    return {
        "expression": f"SEARCH('{{{schema}}} MetricName=\"{metric.name}\" {terms}', "
        f"'{stat}', {PERIOD})",
        "id": "search",  # one SEARCH per widget; ids are the widget's own
    }


def _app(name: str, **values: str) -> dict[str, str]:
    """An EMF metric's dimensions, in its declared order (checked to be its whole set)."""
    metric = APP_METRICS[name]
    if set(values) != set(metric.dimensions):
        raise ValueError(f"{name} has dimensions {metric.dimensions}, not {sorted(values)}")
    return {d: values[d] for d in metric.dimensions}


def _widget(title: str, metrics: list[Any], width: int = 8, **properties: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "width": width,
        "height": 6,
        "properties": {
            "title": title,
            "region": _REGION,
            "view": "timeSeries",
            "stacked": False,
            "period": PERIOD,
            "metrics": metrics,
            **properties,
        },
    }


def _text(markdown: str) -> dict[str, Any]:
    return {"type": "text", "width": GRID, "height": 1, "properties": {"markdown": markdown}}


def _service_widgets(service: ServiceDef, stage: str) -> list[dict[str, Any]]:
    api = {"ApiName": api_name(service, stage), "Stage": api_stage(service)}
    own = [f for f in functions(stage) if f.service.name == service.name]
    widgets = [
        _text(f"## {service.name}: API {api['ApiName']} (stage {api['Stage']})"),
        _widget(
            "Requests (API Gateway)",
            [_metric("AWS/ApiGateway", "Count", api, stat="Sum", label="requests")],
            width=6,
        ),
        _widget(
            "Latency p50 / p99 (API Gateway, ms)",
            [
                _metric("AWS/ApiGateway", "Latency", api, stat="p50", label="p50"),
                _metric("AWS/ApiGateway", "Latency", api, stat="p99", label="p99"),
            ],
            width=6,
        ),
        _widget(
            "4xx / 5xx (API Gateway)",
            [
                _metric("AWS/ApiGateway", "4XXError", api, stat="Sum", label="4xx"),
                _metric("AWS/ApiGateway", "5XXError", api, stat="Sum", label="5xx"),
            ],
            width=6,
        ),
        _widget(
            "Lambda errors / throttles",
            [
                _metric("AWS/Lambda", metric, {"FunctionName": f.name}, stat="Sum",
                        label=f"{f.logical_id} {metric.lower()}")
                for f in own
                for metric in ("Errors", "Throttles")
            ],
            width=6,
        ),
        _widget(
            "Lambda duration p50 / p99 (ms)",
            [
                _metric("AWS/Lambda", "Duration", {"FunctionName": f.name}, stat=stat,
                        label=f"{f.logical_id} {stat}")
                for f in own
                for stat in ("p50", "p99")
            ],
        ),
        _widget(
            "Requests by route and status class (app, EMF)",
            [
                _search(APP_METRICS["Requests"], "Sum", service=service.name, stage=stage),
            ],
        ),
        _widget(
            "Latency p99 by route (app, EMF, ms)",
            [_search(APP_METRICS["Latency"], "p99", service=service.name, stage=stage)],
        ),
    ]  # fmt: skip
    own_tables = [t for t in tables() if t.service.name == service.name]
    if own_tables:
        widgets.append(
            _widget(
                "DynamoDB throttled requests",
                [
                    _metric(
                        "AWS/DynamoDB",
                        "ThrottledRequests",
                        {"TableName": f"${{{t.parameter}}}", "Operation": operation},
                        stat="Sum",
                        label=f"{t.logical_id} {operation}",
                    )
                    for t in own_tables
                    for operation in t.operations
                ],
                width=GRID,
            )
        )
    if service is GATEWAY:
        widgets += [
            _widget(
                "Upstream latency p50 / p99 (ms)",
                [
                    _metric(NAMESPACE, "UpstreamLatency",
                            _app("UpstreamLatency", service=service.name, stage=stage,
                                 target=target),
                            stat=stat, label=f"{target} {stat}")
                    for target in UPSTREAM_TARGETS
                    for stat in ("p50", "p99")
                ],
                width=12,
            ),
            _widget(
                "Upstream failures by target and status",
                [_search(APP_METRICS["UpstreamFailures"], "Sum", service=service.name,
                         stage=stage)],
                width=12,
            ),
        ]  # fmt: skip
    return widgets


def _counts_widgets(stage: str) -> list[dict[str, Any]]:
    return [
        _text("## Business and cold starts (app, EMF)"),
        _widget(
            "Business counts",
            [
                _metric(NAMESPACE, m.name, _app(m.name, service=owner, stage=stage),
                        stat="Sum", label=m.name)
                for m in APP_METRICS.values()
                if m.dimensions == SERVICE_DIMENSIONS and m.name != "ColdStart"
                for owner in m.services
            ],
            width=12,
        ),
        _widget(
            "Cold starts",
            [
                _metric(NAMESPACE, "ColdStart", _app("ColdStart", service=s.name, stage=stage),
                        stat="Sum", label=s.name)
                for s in SERVICES
            ],
            width=12,
        ),
    ]  # fmt: skip


def _event_widgets(stage: str) -> list[dict[str, Any]]:
    subscriptions = [q for q in queues(stage) if q.kind == "subscription"]
    dead = [q for q in queues(stage) if q.kind != "subscription"]

    def event_lines(name: str, services: Iterable[ServiceDef], stat: str) -> list[list[Any]]:
        return [
            _metric(NAMESPACE, name, _app(name, service=s.name, stage=stage, type=t),
                    stat=stat, label=f"{s.name} {t} {name if stat == 'Sum' else stat}")
            for s in services
            for t in event_types(name, s)
        ]  # fmt: skip

    relaying = [s for s in DATA_SERVICES if relayed_types(s)]
    consuming = [s for s in DATA_SERVICES if consumed_types(s)]
    return [
        _text("## Events"),
        _widget(
            "Queue depth (subscription queues)",
            [
                _metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": q.name},
                        stat="Maximum", label=q.name)
                for q in subscriptions
            ]
            + [
                _metric("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": q.name},
                        stat="Maximum", label=f"{q.name} oldest (s)", yAxis="right")
                for q in subscriptions
            ],
        ),
        _widget(
            "Dead letters and failed relay batches",
            [
                _metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": q.name},
                        stat="Maximum", label=q.name)
                for q in dead
            ],
        ),
        _widget(
            "Event lag p50 / p99 (ms, stored to applied)",
            event_lines("EventLag", consuming, "p50") + event_lines("EventLag", consuming, "p99"),
        ),
        _widget(
            "Relay iterator age (max, ms): a held shard grows it",
            [
                _metric("AWS/Lambda", "IteratorAge", {"FunctionName": f.name},
                        stat="Maximum", label=f.name)
                for f in relay_functions(stage)
            ],
            width=12,
        ),
        _widget(
            "Rule deliveries that failed (EventBridge)",
            [
                _metric("AWS/Events", "FailedInvocations",
                        {"EventBusName": r.bus, "RuleName": r.name}, stat="Sum", label=r.name)
                for r in rules(stage)
            ],
            width=12,
        ),
        _widget(
            "Events relayed",
            event_lines("EventsRelayed", relaying, "Sum"),
            width=12,
        ),
        _widget(
            "Events applied / skipped / failed / dead-lettered",
            [
                line
                for name in ("EventsApplied", "EventsSkipped", "EventsFailed",
                             "EventsDeadLettered")
                for line in event_lines(name, consuming, "Sum")
            ],
            width=12,
        ),
    ]  # fmt: skip


def _alarm_widget(stage: str) -> dict[str, Any]:
    names = [a["Properties"]["AlarmName"] for a in alarms(stage).values()]
    prefix = f"arn:${{AWS::Partition}}:cloudwatch:{_REGION}:${{AWS::AccountId}}:alarm:"
    arns = [prefix + name for name in names]
    return {
        "type": "alarm",
        "width": GRID,
        "height": 2 + len(arns) // 4,
        "properties": {"title": "Alarms", "alarms": arns, "sortBy": "stateUpdatedTimestamp"},
    }


def _laid_out(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Left to right, a new row when one is full."""
    x = y = row_height = 0
    placed = []
    for widget in widgets:
        if x + widget["width"] > GRID:
            x, y, row_height = 0, y + row_height, 0
        placed.append({**widget, "x": x, "y": y})
        x += widget["width"]
        row_height = max(row_height, widget["height"])
    return placed


def dashboard_body(stage: str) -> dict[str, Any]:
    """The dashboard as CloudWatch reads it, before ``Fn::Sub`` fills in the region, the account
    and the table names (``${<parameter>}``)."""
    widgets = [_alarm_widget(stage)]
    for service in SERVICES:
        widgets += _service_widgets(service, stage)
    widgets += _event_widgets(stage)
    widgets += _counts_widgets(stage)
    return {"widgets": _laid_out(widgets)}


# --- saved Logs Insights queries ----------------------------------------------------------------

ONE_REQUEST = "one-request"
ERRORS_BY_ROUTE = "errors-by-route"
REQUEST_ID_PLACEHOLDER = "PASTE-THE-REQUEST-ID"
QUERIES = {
    # Every line of one request in every service it went through, in order: the gateway's and the
    # service's lines carry the same request_id (X-Request-Id, forwarded by the gateway).
    ONE_REQUEST: "\n".join(
        [
            "fields @timestamp, service, level, message, method, path, status, duration_ms, @log",
            f'| filter request_id = "{REQUEST_ID_PLACEHOLDER}"',
            "| sort @timestamp asc",
            "| limit 10000",
        ]
    ),
    # What failed, where: error and warning lines and 5xx answers, grouped by service and route
    # (an event function's lines have no path: their log group stands in for it).
    ERRORS_BY_ROUTE: "\n".join(
        [
            # A warning line has no status: grouped as "-", never left out for lacking it.
            'fields @timestamp, service, level, coalesce(status, "-") as answer,'
            " coalesce(path, @log) as route",
            "| filter level in "
            + json.dumps(list(LOG_LEVELS_OF_ERRORS)).replace(", ", ",")
            + " or status >= 500",
            "| stats count(*) as occurrences, max(@timestamp) as last_seen"
            " by service, route, answer, level",
            "| sort occurrences desc",
        ]
    ),
}


def query_name(stage: str, query: str) -> str:
    """Saved under a folder per stage (Logs Insights shows ``a/b`` as folder ``a``)."""
    return f"{topology.PROJECT}-{stage}/{query}"


def query_definitions(stage: str) -> dict[str, Any]:
    log_groups = [f.log_group for f in functions(stage)]
    return {
        f"{camel(query)}Query": {
            "Type": "AWS::Logs::QueryDefinition",
            "Properties": {
                "Name": query_name(stage, query),
                "QueryString": text,
                "LogGroupNames": log_groups,
            },
        }
        for query, text in QUERIES.items()
    }


# --- the template -------------------------------------------------------------------------------


def template(stage: str) -> dict[str, Any]:
    """The observability stack of ``stage``."""
    body = json.dumps(dashboard_body(stage), separators=(",", ":"))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"The {stage} stage's alarms, dashboard and saved log queries "
        "(tools/observability.py)",
        "Parameters": parameters(),
        "Conditions": {
            HAS_EMAIL: {"Fn::Not": [{"Fn::Equals": [_ref(ALARM_EMAIL_PARAMETER), ""]}]}
        },
        "Resources": {
            TOPIC: {
                # Unencrypted on purpose: CloudWatch cannot publish to a topic encrypted with
                # the AWS-managed key (aws/sns), and a key of our own costs $1 a month. The
                # default topic policy lets this account's alarms publish.
                "Type": "AWS::SNS::Topic",
                "Properties": {
                    "TopicName": f"{topology.PROJECT}-{stage}-alarms",
                    "DisplayName": f"{topology.PROJECT} {stage} alarms",
                },
            },
            EMAIL_SUBSCRIPTION: {
                "Type": "AWS::SNS::Subscription",
                "Condition": HAS_EMAIL,
                "Properties": {
                    "TopicArn": _ref(TOPIC),
                    "Protocol": "email",
                    "Endpoint": _ref(ALARM_EMAIL_PARAMETER),
                },
            },
            **alarms(stage),
            DASHBOARD: {
                "Type": "AWS::CloudWatch::Dashboard",
                "Properties": {
                    "DashboardName": dashboard_name(stage),
                    "DashboardBody": {"Fn::Sub": body},
                },
            },
            **query_definitions(stage),
        },
        "Outputs": {
            "AlarmTopicArn": {"Value": _ref(TOPIC)},
            "DashboardName": {"Value": dashboard_name(stage)},
            "DashboardUrl": {
                "Value": {
                    "Fn::Sub": "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home"
                    f"?region=${{AWS::Region}}#dashboards:name={dashboard_name(stage)}"
                }
            },
        },
    }


def write_template(stage: str, out_root: Path) -> Path:
    """``build/<stage>/observability/template.json``: what the deploy sends, for reading and
    linting."""
    path = out_root / STACK_PART / TEMPLATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(template(stage), indent=2))
    return path


def app_series(stage: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Every EMF series with fully known dimension values that the stage's services emit: what
    an alarm or a dashboard line may name (routes and statuses are open-ended: only a SEARCH
    names those)."""
    by_name = {s.name: s for s in SERVICES}
    for metric in APP_METRICS.values():
        extra = metric.dimensions[len(SERVICE_DIMENSIONS) :]
        for service_name in metric.services:
            base = {SERVICE: service_name, STAGE: stage}
            if extra == ():
                yield metric.name, base
            elif extra == (TARGET,):
                for target in UPSTREAM_TARGETS:
                    yield metric.name, {**base, TARGET: target}
            elif extra == (TYPE,):
                for event_type in event_types(metric.name, by_name[service_name]):
                    yield metric.name, {**base, TYPE: event_type}
