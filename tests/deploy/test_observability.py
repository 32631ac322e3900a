"""Tracing and the observability stack, checked against what the other stacks really create.

Every alarm's and every dashboard line's dimensions are resolved, as CloudFormation would, and
looked up among the names the packaged service templates define for the same stage: a
FunctionName must be a function's resolved ``FunctionName``, an ApiName/Stage pair a REST API's
resolved ``Name`` and ``StageName``, a TableName the value the deploy passes from a service
stack's output that names a table, a QueueName a queue's resolved ``QueueName``, a RuleName a
rule's resolved ``Name`` together with the EventBusName that rule is on (EventBridge's metrics for
a custom bus carry both), and an EMF metric's dimensions exactly the set ``svckit.metrics`` emits
it with. A name that matches nothing
is a metric CloudWatch would never have: an alarm that can never go off, a blank graph.

Tracing is checked on every function and every REST API; the saved queries must name every
function's log group and the fields the services really log. Where ``samtranslator`` (AWS SAM's
transform, not a development dependency) is importable, the templates are also run through it,
to see what SAM makes of the tracing and naming properties.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint

from svckit import dynamo, web
from svckit import metrics as app_metrics
from tests.deploy.test_templates import resolved
from tools import deploy, eventstack, observability, package, topology
from tools.services import DATA_SERVICES, GATEWAY, SERVICES, USER, ServiceDef

pytestmark = pytest.mark.deploy

STAGE = "dev"
LONGEST_STAGE = "s" * 16
ALARM = "AWS::CloudWatch::Alarm"
MISSING_DATA = {"breaching", "notBreaching", "ignore", "missing"}


def arn_target(value: Any) -> str:
    """The logical id an ``Fn::GetAtt [id, Arn]`` points at."""
    assert set(value) == {"Fn::GetAtt"}, value
    return str(value["Fn::GetAtt"][0])


@dataclass
class Created:
    """What the packaged service templates create for one stage, by resolved name."""

    functions: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> service, id
    apis: dict[tuple[str, str], str] = field(default_factory=dict)  # (ApiName, Stage) -> service
    tables: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> service, id
    queues: dict[str, str] = field(default_factory=dict)  # name -> kind
    stream_functions: set[str] = field(default_factory=set)  # functions reading a table stream
    rules: dict[str, str] = field(default_factory=dict)  # rule name -> its bus's name
    log_groups: set[str] = field(default_factory=set)
    parameters: dict[str, str] = field(default_factory=dict)  # observability's, as deployed


def table_token(service: str, logical_id: str) -> str:
    """Stands for the table's real name, which CloudFormation makes up at deploy time."""
    return f"<table {service} {logical_id}>"


def created_by(templates: dict[str, dict[str, Any]], stage: str) -> Created:
    found = Created()
    outputs: dict[str, dict[str, str]] = {}
    # The bus's name, as the bus stack makes it; the deploy passes it to the service stacks.
    bus = eventstack.bus_template(stage)["Resources"][eventstack.BUS]["Properties"]["Name"]
    for service in SERVICES:
        template = templates[service.name]
        resources = template["Resources"]
        refs = {
            "AWS::StackName": deploy.Naming(stage).stack(service),
            eventstack.BUS_NAME_PARAMETER: bus,
        }
        names = {}
        for logical_id, resource in resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::Serverless::Function":
                names[logical_id] = resolved(props["FunctionName"], refs)
                found.functions[names[logical_id]] = (service.name, logical_id)
                if any(e["Type"] == "DynamoDB" for e in props.get("Events", {}).values()):
                    found.stream_functions.add(names[logical_id])
            elif resource["Type"] == "AWS::Events::Rule":
                found.rules[resolved(props["Name"], refs)] = resolved(props["EventBusName"], refs)
            elif resource["Type"] == "AWS::Serverless::Api":
                found.apis[(resolved(props["Name"], refs), props["StageName"])] = service.name
            elif resource["Type"] == "AWS::SQS::Queue":
                found.queues[resolved(props["QueueName"], refs)] = kind_of_queue(
                    template, logical_id
                )
        for resource in resources.values():
            if resource["Type"] == "AWS::Logs::LogGroup":
                group = resource["Properties"]["LogGroupName"]
                found.log_groups.add(resolved(group, {**refs, **names}))
        # The deploy hands each output to the observability stack: the tables' names as tokens.
        outputs[service.name] = {}
        for key, output in template.get("Outputs", {}).items():
            value = output["Value"]
            if isinstance(value, dict) and set(value) == {"Ref"}:
                target = resources.get(value["Ref"], {})
                if target.get("Type") == "AWS::DynamoDB::Table":
                    token = table_token(service.name, value["Ref"])
                    outputs[service.name][key] = token
                    found.tables[token] = (service.name, value["Ref"])
    values = observability.parameter_values(outputs, None)
    found.parameters = {k: v for k, v in values.items() if v is not None}
    return found


def kind_of_queue(template: dict[str, Any], logical_id: str) -> str:
    """What a queue is for, from the template's own wiring: a subscription queue feeds a
    function, a dead-letter queue is another queue's redrive target, a failure queue is a
    stream mapping's on-failure destination."""
    resources = template["Resources"]
    for resource in resources.values():
        props = resource.get("Properties", {})
        redrive = props.get("RedrivePolicy")
        if redrive and arn_target(redrive["deadLetterTargetArn"]) == logical_id:
            return "dead-letters"
        for event in props.get("Events", {}).values():
            event_props = event["Properties"]
            if event["Type"] == "SQS" and arn_target(event_props["Queue"]) == logical_id:
                return "subscription"
            destination = event_props.get("DestinationConfig", {}).get("OnFailure", {})
            if destination and arn_target(destination["Destination"]) == logical_id:
                return "relay-failures"
    raise AssertionError(f"queue {logical_id} is wired to nothing")


# --- what the code does ------------------------------------------------------------------------

CLIENT_CALL = re.compile(r"dynamo\.client\(\)\s*\.\s*([a-z_]+)\(")
HELPER_CALL = re.compile(r"dynamo\.(" + "|".join(dynamo.HELPER_ACTIONS) + r")\(")
EVENTS_CALL = re.compile(r"events\.(apply_once|record_once|was_applied)\(")
TRANSACT_ITEM = re.compile(r'"(Put|Update|Delete|ConditionCheck)":\s*\{')
# The API operation each svckit helper makes (CloudWatch's Operation, not IAM's action).
HELPER_OPERATIONS = {
    "put_new": "PutItem",
    "get": "GetItem",
    "scan_page": "Scan",
    "query_page": "Query",
    "update_once": "TransactWriteItems",
}
EVENTS_OPERATIONS = {
    "apply_once": "TransactWriteItems",
    "record_once": "TransactWriteItems",
    "was_applied": "GetItem",
}


def camel_operation(call: str) -> str:
    return "".join(part.title() for part in call.split("_"))


def operations_in_code(service: ServiceDef) -> dict[str, set[str]]:
    """The DynamoDB operations the service's code makes, by the logical id of the table: direct
    client calls, svckit's helpers, svckit.events' processed-events calls, and the entries of
    transactions it builds. A file's calls are on the main table unless it names another
    table's variable (as tests/deploy/test_templates.py attributes IAM actions)."""
    others = {
        service.table_env(logical_id): logical_id
        for logical_id in service.tables()
        if logical_id not in ("Table", topology.PROCESSED_EVENTS_TABLE)
    }
    sources = [service.directory / "app.py"]
    sources += sorted((service.directory / "chalicelib").glob("*.py"))
    found: dict[str, set[str]] = {}
    for path in sources:
        text = path.read_text()
        named = {lid for variable, lid in others.items() if f'"{variable}"' in text}
        assert len(named) <= 1, f"{path} names the variables of several tables: {named}"
        table = named.pop() if named else "Table"
        operations = {camel_operation(c) for c in CLIENT_CALL.findall(text)}
        operations |= {HELPER_OPERATIONS[h] for h in HELPER_CALL.findall(text)}
        if TRANSACT_ITEM.search(text):
            operations.add("TransactWriteItems")
        if operations:
            found.setdefault(table, set()).update(operations)
        for call in EVENTS_CALL.findall(text):
            found.setdefault(topology.PROCESSED_EVENTS_TABLE, set()).add(EVENTS_OPERATIONS[call])
    return found


def test_the_code_scan_knows_every_helper_svckit_has() -> None:
    assert set(HELPER_OPERATIONS) == set(dynamo.HELPER_ACTIONS)
    events_source = (Path(dynamo.__file__).parent / "events.py").read_text()
    assert set(CLIENT_CALL.findall(events_source)) == {"transact_write_items", "get_item"}


@pytest.mark.parametrize("service", DATA_SERVICES, ids=lambda s: s.name)
def test_each_table_is_watched_for_exactly_the_operations_its_code_makes(
    service: ServiceDef,
) -> None:
    declared = {
        t.logical_id: set(t.operations) for t in observability.tables() if t.service is service
    }
    assert declared == operations_in_code(service)
    for operations in declared.values():
        assert len(operations) + 1 <= observability.ALARM_METRICS_LIMIT


def emitters_in_code() -> dict[str, set[str]]:
    """Who adds each metric, from the ``metrics.add(metrics.X`` calls in each service's code;
    svckit's own (requests, cold starts, events) belong to every service that runs them."""
    adds = re.compile(r"metrics\.add\(\s*metrics\.([A-Z_]+)")
    found: dict[str, set[str]] = {}
    for service in SERVICES:
        sources = [service.directory / "app.py", *(service.directory / "chalicelib").glob("*.py")]
        for path in sources:
            for constant in adds.findall(path.read_text()):
                found.setdefault(getattr(app_metrics, constant).name, set()).add(service.name)
    svckit = Path(web.__file__).parent
    everyone = {s.name for s in SERVICES}
    relaying = {r.service.name for r in topology.RELAYS}
    consuming = {s.service.name for s in topology.SUBSCRIPTIONS}
    for module, services in (("web.py", everyone), ("events.py", None)):
        for constant in adds.findall((svckit / module).read_text()):
            name = getattr(app_metrics, constant).name
            who = services if services is not None else (
                relaying if name == "EventsRelayed" else consuming
            )
            found.setdefault(name, set()).update(who)
    assert "invocation.add(COLD_START" in (svckit / "metrics.py").read_text()
    found.setdefault(app_metrics.COLD_START.name, set()).update(everyone)
    return found


def test_the_emf_contract_is_the_code_own() -> None:
    """Names, units and dimension sets come from svckit.metrics' catalogue; who emits each is
    what the code's metrics.add calls say."""
    catalogue = {m.name: m for m in app_metrics.CATALOGUE}
    assert set(observability.APP_METRICS) == set(catalogue)
    assert observability.NAMESPACE == app_metrics.NAMESPACE == "shop"
    for name, metric in observability.APP_METRICS.items():
        assert metric.dimensions == catalogue[name].dimension_names
        assert metric.unit == catalogue[name].unit.value
    code = emitters_in_code()
    assert {n: set(m.services) for n, m in observability.APP_METRICS.items()} == code
    # The brief's table, as a second pair of eyes on the catalogue.
    request, service_only = ("service", "stage", "route", "status_class"), ("service", "stage")
    expected = {
        "Requests": request, "Latency": request, "ColdStart": service_only,
        "UsersRegistered": service_only, "UsersDeleted": service_only,
        "LoginsFailed": service_only, "LoginsThrottled": service_only,
        "ProductsAdded": service_only, "ProductsDeleted": service_only,
        "PointsGranted": service_only,
        "UpstreamLatency": ("service", "stage", "target"),
        "UpstreamFailures": ("service", "stage", "target", "status"),
        **{n: ("service", "stage", "type") for n in (
            "EventsRelayed", "EventsApplied", "EventsSkipped", "EventsFailed",
            "EventsDeadLettered", "EventLag",
        )},
    }  # fmt: skip
    assert {n: m.dimensions for n, m in observability.APP_METRICS.items()} == expected
    assert set(observability.EVENT_TYPES) == {
        "ProductAdded", "ProductDeleted", "UserRegistered", "UserDeleted"
    }  # fmt: skip
    for sub in topology.SUBSCRIPTIONS:
        assert set(sub.types) <= set(observability.PUBLISHED_TYPES[sub.source])
        # A poison message fails (and is dead-lettered) as "unreadable"; an event of a type the
        # consumer has no handler for is skipped as "other" (svckit.events.consume): both are
        # series the dashboard must show.
        failed = observability.event_types("EventsDeadLettered", sub.service)
        assert failed == (*sub.types, "unreadable")
        assert observability.event_types("EventsSkipped", sub.service) == (*sub.types, "other")
        assert observability.event_types("EventLag", sub.service) == sub.types
    consume = (Path(web.__file__).parent / "events.py").read_text()
    assert 'UNREADABLE = "unreadable"' in consume
    assert 'OTHER_TYPE = "other"' in consume


def test_a_request_emits_exactly_the_dimension_sets_and_log_fields_the_stack_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """End to end through svckit: one request to a service's app writes an EMF line whose
    namespace and dimension sets are the ones the alarms and dashboard name, and a log line
    with every field the saved queries read."""
    monkeypatch.setenv("STAGE", STAGE)
    from chalice.test import Client

    service = web.Service(f"obs-{uuid.uuid4().hex[:8]}", tmp_path)

    @service.app.route("/things/{thing}")
    def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    handler = service.log.registered_handler
    stream = io.StringIO()
    handler.setStream(stream)
    with Client(service.app) as client:
        assert client.http.get("/things/one").status_code == 200
    assert handler.flush_queue(10)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    emf = [line for line in lines if "_aws" in line]
    sets = {
        (directive["Namespace"], tuple(dims), metric["Name"])
        for line in emf
        for directive in line["_aws"]["CloudWatchMetrics"]
        for dims in directive["Dimensions"]
        for metric in directive["Metrics"]
    }
    assert sets == {
        ("shop", observability.APP_METRICS["Requests"].dimensions, "Requests"),
        ("shop", observability.APP_METRICS["Latency"].dimensions, "Latency"),
        ("shop", observability.APP_METRICS["ColdStart"].dimensions, "ColdStart"),
    }
    request_line = next(line for line in emf if "Requests" in line)
    assert request_line["stage"] == STAGE
    assert request_line["service"] == service.name
    assert request_line["route"] == "GET /things/{thing}"
    (log,) = [line for line in lines if line.get("message") == "request"]
    for key in ("request_id", "service", "level", "message", "method", "path", "status",
                "duration_ms"):  # fmt: skip
        assert key in log, key
    assert log["path"] == "/things/{thing}"  # the route, which errors-by-route groups by
    assert log["level"] == "INFO"


# --- tracing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_every_function_and_the_api_are_traced_and_may_send_their_traces(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    template = templates[name]
    resources = template["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    service = next(s for s in SERVICES if s.name == name)
    assert sorted(functions) == sorted(package.functions_of(service))
    for logical_id, function in functions.items():
        assert function["Properties"]["Tracing"] == "Active", logical_id
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = package.role_statements(template, role)
        xray = [s for s in statements if any(a.startswith("xray:") for a in s["Action"])]
        assert xray == [package.XRAY_STATEMENT], logical_id
        policy = resources[package.tracing_policy_id(logical_id)]
        assert policy["Properties"]["Roles"] == [{"Ref": role}]
        assert package.tracing_policy_id(logical_id) in function["DependsOn"]
    api = resources["RestAPI"]
    assert api["Type"] == "AWS::Serverless::Api"
    assert api["Properties"]["TracingEnabled"] is True


def test_check_template_refuses_untraced_functions_and_apis_and_unnamed_tables(
    templates: dict[str, dict[str, Any]],
) -> None:
    """make package stops on any of these, before a deploy could make an untraced stack or an
    observability stack that watches nothing."""
    good = templates[USER.name]
    consumer = eventstack.function_id("on_product_events")

    def broken(change: Any) -> dict[str, Any]:
        copied = json.loads(json.dumps(good))
        change(copied["Resources"])
        return copied

    def widen(resources: dict[str, Any]) -> None:
        policy = resources[package.tracing_policy_id(consumer)]["Properties"]["PolicyDocument"]
        policy["Statement"][0]["Action"] = ["xray:*"]

    cases = {
        r"Tracing is 'PassThrough'": lambda r: r[consumer]["Properties"].update(
            Tracing="PassThrough"
        ),
        "must allow exactly xray:PutTraceSegments": lambda r: r.pop(
            package.tracing_policy_id(consumer)
        ),
        "must allow exactly xray:PutTraceSegments ": widen,
        "TracingEnabled": lambda r: r["RestAPI"]["Properties"].pop("TracingEnabled"),
        "Name and its body's info.title": lambda r: r["RestAPI"]["Properties"].pop("Name"),
        "Name and its body's info.title ": lambda r: r["RestAPI"]["Properties"][
            "DefinitionBody"
        ]["info"].update(title="user_api"),
    }
    for message, change in cases.items():
        with pytest.raises(package.PackageError, match=re.escape(message.strip())):
            package.check_template(USER, broken(change), STAGE)
    no_output = json.loads(json.dumps(good))
    no_output["Outputs"].pop("ProcessedEventsTableName")
    with pytest.raises(package.PackageError, match="no output ProcessedEventsTableName"):
        package.check_template(USER, no_output, STAGE)


def test_stage_settings_switch_tracing_on_for_every_function() -> None:
    """Chalice reads "xray" per stage and per function; the stage's value reaches every
    function unless one overrides it, and none does."""
    for service in SERVICES:
        assert eventstack.chalice_setting(service, STAGE, "app", "xray") is True
        for handler in eventstack.event_functions(service).values():
            assert eventstack.chalice_setting(service, STAGE, handler, "xray") is True


@pytest.mark.parametrize("stage", [STAGE, LONGEST_STAGE])
def test_each_api_is_named_after_its_stack_so_its_metrics_are_the_stage_own(
    stage: str, templates: dict[str, dict[str, Any]]
) -> None:
    """chalice package names the API after the app (its Swagger body's title), the same in
    every stage, and API Gateway's metrics carry that name: dev's and prod's would add up in one
    series. Name and title are both the stack's."""
    names = set()
    for service in SERVICES:
        props = templates[service.name]["Resources"]["RestAPI"]["Properties"]
        refs = {"AWS::StackName": deploy.Naming(stage).stack(service)}
        name = resolved(props["Name"], refs)
        assert resolved(props["DefinitionBody"]["info"]["title"], refs) == name
        assert name == observability.api_name(service, stage)
        assert props["StageName"] == observability.api_stage(service) == deploy.stage_path(service)
        names.add(name)
    assert len(names) == len(SERVICES)
    assert not names & {observability.api_name(s, "other") for s in SERVICES}


def test_sam_makes_the_stage_traced_the_api_named_and_no_xray_permission_of_its_own(
    templates: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What AWS's own transform (aws-sam-translator, a development dependency) does with the
    properties. It is why the merge template must add both the API's tracing and each role's
    X-Ray permission."""
    from samtranslator.translator.transform import transform
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    for service in SERVICES:
        template = json.loads(json.dumps(templates[service.name]))
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::Serverless::Function":
                resource["Properties"]["CodeUri"] = "s3://bucket/key.zip"
        plain = transform(template, {}, NoManagedPolicies())["Resources"]
        by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in plain.values():
            by_type.setdefault(resource["Type"], []).append(resource.get("Properties", {}))
        (api,) = by_type["AWS::ApiGateway::RestApi"]
        assert api["Name"] == {"Ref": "AWS::StackName"}
        assert api["Body"]["info"]["title"] == {"Ref": "AWS::StackName"}
        (stage,) = by_type["AWS::ApiGateway::Stage"]
        assert stage["TracingEnabled"] is True
        for function in by_type["AWS::Lambda::Function"]:
            assert function["TracingConfig"] == {"Mode": "Active"}
        for role in by_type["AWS::IAM::Role"]:
            assert "xray" not in json.dumps(role).lower()


# --- the observability template ------------------------------------------------------------------


def test_cfn_lint_finds_no_error_or_warning_in_the_observability_stack(
    observability_template_path: Path,
) -> None:
    matches = lint(observability_template_path.read_text())
    assert [str(m) for m in matches if m.rule.id[0] in "EW"] == []
    assert json.loads(observability_template_path.read_text()) == observability.template(STAGE)


@pytest.fixture(scope="module")
def created(templates: dict[str, dict[str, Any]]) -> Created:
    return created_by(templates, STAGE)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return observability.template(STAGE)


def dimension_values(dimensions: list[dict[str, Any]], parameters: dict[str, str]) -> dict:
    """An alarm's dimensions as CloudFormation resolves them (a Ref is one of the stack's
    parameters, given the value the deploy passes)."""
    values = {}
    for dimension in dimensions:
        value = dimension["Value"]
        if isinstance(value, dict):
            assert set(value) == {"Ref"}, value
            value = parameters[value["Ref"]]
        assert dimension["Name"] not in values, f"dimension {dimension['Name']} twice"
        values[dimension["Name"]] = value
    return values


APP_SERIES = {(name, tuple(sorted(d.items()))) for name, d in observability.app_series(STAGE)}


def check_metric(namespace: str, name: str, dims: dict[str, str], created: Created) -> tuple:
    """That ``namespace``/``name``/``dims`` is a metric the stage really has; what it watches."""
    if namespace == "AWS/ApiGateway":
        assert set(dims) == {"ApiName", "Stage"}, dims
        assert (dims["ApiName"], dims["Stage"]) in created.apis, dims
        assert name in {"Count", "Latency", "4XXError", "5XXError"}, name
        return ("api", dims["ApiName"], name)
    if namespace == "AWS/Lambda":
        assert set(dims) == {"FunctionName"}, dims
        assert dims["FunctionName"] in created.functions, dims
        # IteratorAge exists only for a function that reads a stream.
        stream = dims["FunctionName"] in created.stream_functions
        assert name in {"Errors", "Throttles", "Duration"} | ({"IteratorAge"} if stream else set())
        return ("function", dims["FunctionName"], name)
    if namespace == "AWS/Events":
        # A rule of a custom bus: both names (RuleName alone is a rule of the default bus).
        assert set(dims) == {"EventBusName", "RuleName"}, dims
        assert created.rules.get(dims["RuleName"]) == dims["EventBusName"], dims
        assert name == "FailedInvocations", name
        return ("rule", dims["RuleName"], name)
    if namespace == "AWS/DynamoDB":
        # ThrottledRequests has a series per table and operation and none per table alone;
        # UserErrors (which has no table at all) is not used.
        assert name == "ThrottledRequests", name
        assert set(dims) == {"TableName", "Operation"}, dims
        service, logical_id = created.tables[dims["TableName"]]
        code = operations_in_code(next(s for s in SERVICES if s.name == service))
        assert dims["Operation"] in code[logical_id], dims
        return ("table", (service, logical_id), dims["Operation"])
    if namespace == "AWS/SQS":
        assert set(dims) == {"QueueName"}, dims
        assert dims["QueueName"] in created.queues, dims
        kind = created.queues[dims["QueueName"]]
        allowed = {"ApproximateNumberOfMessagesVisible"}
        if kind == "subscription":
            allowed.add("ApproximateAgeOfOldestMessage")
        assert name in allowed, (name, kind)
        return ("queue", dims["QueueName"], name)
    assert namespace == "shop", namespace
    assert tuple(dims) == observability.APP_METRICS[name].dimensions, (name, dims)
    assert (name, tuple(sorted(dims.items()))) in APP_SERIES, (name, dims)
    return ("app", tuple(sorted(dims.items())), name)


def alarms_of(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in stack["Resources"].items() if v["Type"] == ALARM}


def alarm_metrics(alarm: dict[str, Any]) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    if "Metrics" in alarm:
        for query in alarm["Metrics"]:
            if "MetricStat" in query:
                metric = query["MetricStat"]["Metric"]
                yield metric["Namespace"], metric["MetricName"], metric["Dimensions"]
    else:
        yield alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions", [])


def test_every_alarm_dimension_resolves_to_something_the_stacks_create(
    stack: dict[str, Any], created: Created
) -> None:
    watched = set()
    for logical_id, alarm in alarms_of(stack).items():
        for namespace, name, dimensions in alarm_metrics(alarm):
            dims = dimension_values(dimensions, created.parameters)
            watched.add(check_metric(namespace, name, dims, created))
        assert alarm["TreatMissingData"] in MISSING_DATA, logical_id
        assert alarm["AlarmActions"] == [{"Ref": observability.TOPIC}], logical_id
        assert alarm["OKActions"] == [{"Ref": observability.TOPIC}], logical_id
        assert len(alarm["AlarmDescription"]) <= 1024, logical_id
        assert len(alarm["AlarmName"]) <= 255, logical_id
    # And every table parameter is one the deploy fills from a table output.
    table_parameters = {t.parameter for t in observability.tables()}
    assert table_parameters == set(created.parameters) - {observability.ALARM_EMAIL_PARAMETER}
    assert set(created.tables) == {created.parameters[p] for p in table_parameters}
    assert watched  # checked above, one by one


def test_every_function_api_table_and_failure_queue_has_its_alarms(
    stack: dict[str, Any], created: Created
) -> None:
    alarms = alarms_of(stack)

    def single(namespace: str, name: str, **dims: str) -> list[dict[str, Any]]:
        return [
            a
            for a in alarms.values()
            if a.get("Namespace") == namespace
            and a.get("MetricName") == name
            and dimension_values(a.get("Dimensions", []), created.parameters) == dims
        ]

    for function in created.functions:
        for metric in ("Errors", "Throttles"):
            (alarm,) = single("AWS/Lambda", metric, FunctionName=function)
            assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
            assert alarm["TreatMissingData"] == "notBreaching"
        # A relay that cannot publish holds its shard (a partial batch failure, which no Errors
        # alarm sees): its IteratorAge grows, and that is what goes off.
        iterator_age = single("AWS/Lambda", "IteratorAge", FunctionName=function)
        if function not in created.stream_functions:
            assert iterator_age == []
            continue
        (alarm,) = iterator_age
        assert alarm["Statistic"] == "Maximum"
        assert alarm["Period"] == 300
        assert alarm["Threshold"] == {"Ref": observability.ITERATOR_AGE_PARAMETER}
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
    assert len(created.stream_functions) == len(topology.RELAYS)
    assert stack["Parameters"][observability.ITERATOR_AGE_PARAMETER]["Default"] == 5 * 60 * 1000
    # Every rule: the deliveries EventBridge gave up on, by its bus and rule names.
    assert len(created.rules) == len(topology.SUBSCRIPTIONS)
    for rule, bus in created.rules.items():
        (alarm,) = single("AWS/Events", "FailedInvocations", EventBusName=bus, RuleName=rule)
        assert [d["Name"] for d in alarm["Dimensions"]] == ["EventBusName", "RuleName"]
        assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
    for api_name, api_stage in created.apis:
        (errors,) = single("AWS/ApiGateway", "5XXError", ApiName=api_name, Stage=api_stage)
        assert (errors["Statistic"], errors["Threshold"]) == ("Sum", 1)
        (latency,) = single("AWS/ApiGateway", "Latency", ApiName=api_name, Stage=api_stage)
        assert latency["ExtendedStatistic"] == "p99"
        assert "Statistic" not in latency
        assert latency["Threshold"] == {"Ref": observability.LATENCY_PARAMETER}
    # One metric-math alarm per table, over exactly its code's operations.
    by_table: dict[tuple[str, str], set[str]] = {}
    for alarm in alarms.values():
        if "Metrics" not in alarm:
            continue
        expressions = [q for q in alarm["Metrics"] if "Expression" in q]
        assert [q["ReturnData"] for q in expressions] == [True]
        assert expressions[0]["Expression"] == "SUM(FILL(METRICS(), 0))"
        assert all(q["ReturnData"] is False for q in alarm["Metrics"] if "MetricStat" in q)
        tables = set()
        for _, _, dimensions in alarm_metrics(alarm):
            dims = dimension_values(dimensions, created.parameters)
            tables.add(created.tables[dims["TableName"]])
            by_table.setdefault(created.tables[dims["TableName"]], set()).add(dims["Operation"])
        assert len(tables) == 1, "one table per alarm"
        assert (alarm["Threshold"], alarm["TreatMissingData"]) == (1, "notBreaching")
    assert by_table == {
        (service.name, logical_id): operations
        for service in DATA_SERVICES
        for logical_id, operations in operations_in_code(service).items()
    }
    for queue, kind in created.queues.items():
        visible = single("AWS/SQS", "ApproximateNumberOfMessagesVisible", QueueName=queue)
        age = single("AWS/SQS", "ApproximateAgeOfOldestMessage", QueueName=queue)
        if kind == "subscription":
            (alarm,) = age
            assert visible == []
            assert alarm["Threshold"] == {"Ref": observability.QUEUE_AGE_PARAMETER}
        else:
            (alarm,) = visible
            assert age == []
            assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert alarm["Statistic"] == "Maximum"
        assert alarm["TreatMissingData"] == "notBreaching"


def test_event_lag_alarms_name_exactly_the_dimension_set_the_consumers_emit(
    stack: dict[str, Any],
) -> None:
    lag = [a for a in alarms_of(stack).values() if a.get("MetricName") == "EventLag"]
    expected = {
        (sub.service.name, event_type) for sub in topology.SUBSCRIPTIONS for event_type in sub.types
    }
    found = set()
    for alarm in lag:
        assert alarm["Namespace"] == "shop"
        names = [d["Name"] for d in alarm["Dimensions"]]
        assert names == list(app_metrics.EVENT_LAG.dimension_names)
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims["stage"] == STAGE
        assert alarm["ExtendedStatistic"] == "p99"
        assert alarm["Threshold"] == {"Ref": observability.EVENT_LAG_PARAMETER}
        assert alarm["TreatMissingData"] == "notBreaching"
        found.add((dims["service"], dims["type"]))
    assert found == expected


def test_alarm_names_are_the_stage_own_and_unique(stack: dict[str, Any]) -> None:
    names = [a["AlarmName"] for a in alarms_of(stack).values()]
    assert len(names) == len(set(names))
    assert all(n.startswith(f"shop-{STAGE}-") for n in names)
    other = [a["AlarmName"] for a in alarms_of(observability.template(LONGEST_STAGE)).values()]
    assert not set(names) & set(other)
    assert max(len(n) for n in other) <= 255


def test_alarms_reach_one_topic_and_the_mail_subscription_only_when_an_address_is_given(
    stack: dict[str, Any],
) -> None:
    resources = stack["Resources"]
    topics = [k for k, v in resources.items() if v["Type"] == "AWS::SNS::Topic"]
    assert topics == [observability.TOPIC]
    assert resources[observability.TOPIC]["Properties"]["TopicName"] == f"shop-{STAGE}-alarms"
    subscription = resources[observability.EMAIL_SUBSCRIPTION]
    assert subscription["Condition"] == observability.HAS_EMAIL
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": observability.TOPIC},
        "Protocol": "email",
        "Endpoint": {"Ref": observability.ALARM_EMAIL_PARAMETER},
    }
    assert stack["Conditions"][observability.HAS_EMAIL] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": observability.ALARM_EMAIL_PARAMETER}, ""]}]
    }
    email = stack["Parameters"][observability.ALARM_EMAIL_PARAMETER]
    assert email["Default"] == ""
    pattern = re.compile(email["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch("ops@example.com")
    assert not pattern.fullmatch("not an address")
    for parameter, declared in stack["Parameters"].items():
        if parameter.endswith("TableName"):
            assert "Default" not in declared, "the deploy passes each table's name"


def dashboard_widgets(stack: dict[str, Any], created: Created) -> list[dict[str, Any]]:
    """The dashboard's widgets after CloudFormation's Fn::Sub."""
    dashboard = stack["Resources"][observability.DASHBOARD]["Properties"]
    assert dashboard["DashboardName"] == f"shop-{STAGE}"
    text = dashboard["DashboardBody"]["Fn::Sub"]
    substitutions = {
        **created.parameters,
        "AWS::Region": "eu-west-1",
        "AWS::Partition": "aws",
        "AWS::AccountId": "123456789012",
    }
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, "a placeholder Fn::Sub cannot resolve"
    return list(json.loads(text)["widgets"])


SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} MetricName=\"(\w+)\" (.*)', '(\w+)', (\d+)\)")


def test_every_dashboard_line_names_a_metric_the_stage_has(
    stack: dict[str, Any], created: Created
) -> None:
    watched = set()
    searched = set()
    for widget in dashboard_widgets(stack, created):
        assert widget["x"] + widget["width"] <= observability.GRID
        if widget["type"] != "metric":
            continue
        assert widget["properties"]["region"] == "eu-west-1"
        for line in widget["properties"]["metrics"]:
            if isinstance(line, dict):
                # A SEARCH over an EMF metric's exact dimension set (routes, statuses).
                match = SEARCH.fullmatch(line["expression"])
                assert match, line
                schema, name, terms, _, _ = match.groups()
                namespace, *dims = schema.split(",")
                assert namespace == "shop"
                assert tuple(dims) == observability.APP_METRICS[name].dimensions, name
                values = dict(re.findall(r'(\w+)="([^"]*)"', terms))
                assert values["stage"] == STAGE
                assert values["service"] in observability.APP_METRICS[name].services
                searched.add(name)
                continue
            options = line[-1] if isinstance(line[-1], dict) else {}
            parts = line[:-1] if options else line
            namespace, name, *pairs = parts
            dims = dict(zip(pairs[::2], pairs[1::2], strict=True))
            watched.add(check_metric(namespace, name, dims, created))
    # Everything is on it: per service requests, latency, 4xx/5xx; per function errors,
    # throttles and duration; per table and operation the throttles; every queue; every EMF
    # metric (as a line or a search).
    for api_name, _ in created.apis:
        for metric in ("Count", "Latency", "4XXError", "5XXError"):
            assert ("api", api_name, metric) in watched
    for function in created.functions:
        for metric in ("Errors", "Throttles", "Duration"):
            assert ("function", function, metric) in watched
    for function in created.stream_functions:
        assert ("function", function, "IteratorAge") in watched
    for rule in created.rules:
        assert ("rule", rule, "FailedInvocations") in watched
    for service in DATA_SERVICES:
        for logical_id, operations in operations_in_code(service).items():
            for operation in operations:
                assert ("table", (service.name, logical_id), operation) in watched
    for queue in created.queues:
        assert ("queue", queue, "ApproximateNumberOfMessagesVisible") in watched
    on_lines = {name for kind, _, name in watched if kind == "app"}
    assert on_lines | searched == set(observability.APP_METRICS)
    for name, dims in observability.app_series(STAGE):
        assert ("app", tuple(sorted(dims.items())), name) in watched, (name, dims)


def test_the_dashboard_alarm_widget_lists_every_alarm(
    stack: dict[str, Any], created: Created
) -> None:
    widgets = [w for w in dashboard_widgets(stack, created) if w["type"] == "alarm"]
    (widget,) = widgets
    names = sorted(a["AlarmName"] for a in alarms_of(stack).values())
    prefix = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:"
    assert sorted(widget["properties"]["alarms"]) == sorted(prefix + n for n in names)
    assert len(names) <= 100  # an alarm widget's limit


def test_saved_queries_cover_every_function_log_group(
    stack: dict[str, Any], created: Created
) -> None:
    queries = {
        v["Properties"]["Name"]: v["Properties"]
        for v in stack["Resources"].values()
        if v["Type"] == "AWS::Logs::QueryDefinition"
    }
    assert sorted(queries) == [f"shop-{STAGE}/errors-by-route", f"shop-{STAGE}/one-request"]
    assert len(created.log_groups) == len(created.functions) == 7
    for query in queries.values():
        assert sorted(query["LogGroupNames"]) == sorted(created.log_groups)
    one = queries[f"shop-{STAGE}/one-request"]["QueryString"]
    assert 'filter request_id = "' in one
    for name in ("service", "message", "path", "status", "duration_ms"):
        assert re.search(rf"\b{name}\b", one.splitlines()[0]), name
    assert "sort @timestamp asc" in one
    errors = queries[f"shop-{STAGE}/errors-by-route"]["QueryString"]
    assert 'level in ["ERROR","WARNING"]' in errors
    assert "status >= 500" in errors
    assert re.search(r"stats count\(\*\) as \w+.* by service, route, answer, level", errors)
    assert 'coalesce(status, "-") as answer' in errors  # lines without a status still count


def test_parameter_values_come_from_the_service_stacks_outputs() -> None:
    outputs = {s.name: {} for s in SERVICES}
    with pytest.raises(KeyError, match="has no output"):
        observability.parameter_values(outputs, None)
    for table in observability.tables():
        outputs[table.service.name][table.output] = f"name-of-{table.logical_id}"
    values = observability.parameter_values(outputs, "ops@example.com")
    assert values[observability.ALARM_EMAIL_PARAMETER] == "ops@example.com"
    kept = observability.parameter_values(outputs, None)
    assert kept[observability.ALARM_EMAIL_PARAMETER] is None
    assert GATEWAY.name not in {t.service.name for t in observability.tables()}
