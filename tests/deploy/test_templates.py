"""The packaged templates say what the deploy promises: lint-clean, least privilege, wired by Ref.

These read ``sam.json`` as ``tools.package`` leaves it (the file CloudFormation receives, apart
from the S3 place of the code), and the bus stack's template as ``tools.eventstack`` writes it,
so a change to a ``resources.json``, a ``config.json``, ``tools/topology.py`` or the app that
breaks a promise fails here, before anyone deploys.

Every function is checked, not only the API's: the event functions (relays of a table stream to
the bus, consumers of a queue) each have a role of their own, and each role may touch only that
function's own stream or queue, log group and data.
"""

from __future__ import annotations

import copy
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint

from svckit import dynamo, events
from tools import deploy, eventstack, package, topology
from tools.services import GATEWAY, PRODUCT, SERVICES, USER, ServiceDef

pytestmark = pytest.mark.deploy

SERVICE_NAMES = [s.name for s in SERVICES]

BY_NAME = {s.name: s for s in SERVICES}
DATA_SERVICES = [USER.name, PRODUCT.name]
RELAYS = {relay.handler: relay for relay in topology.RELAYS}
SUBSCRIPTIONS = {sub.handler: sub for sub in topology.SUBSCRIPTIONS}
LONGEST_STAGE = "s" * 16  # tools.deploy.Naming's longest stage name


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def functions(template: dict[str, Any]) -> list[str]:
    """Every function of the template, by logical id."""
    return list(resources_of(template, "AWS::Serverless::Function"))


def function(template: dict[str, Any], logical_id: str = package.FUNCTION) -> dict[str, Any]:
    return template["Resources"][logical_id]["Properties"]


def env(template: dict[str, Any], logical_id: str = package.FUNCTION) -> dict[str, Any]:
    return function(template, logical_id)["Environment"]["Variables"]


def role_of(template: dict[str, Any], logical_id: str) -> str:
    role_ref = function(template, logical_id)["Role"]
    assert set(role_ref) == {"Fn::GetAtt"}, role_ref
    role_id = str(role_ref["Fn::GetAtt"][0])
    assert template["Resources"][role_id]["Type"] == "AWS::IAM::Role"
    return role_id


def role_statements(
    template: dict[str, Any], logical_id: str = package.FUNCTION
) -> Iterator[dict[str, Any]]:
    """Every IAM statement that reaches the function: its role's inline policies and every
    ``AWS::IAM::Policy`` attached to that role."""
    role_id = role_of(template, logical_id)
    for policy in template["Resources"][role_id]["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            yield from policy["Properties"]["PolicyDocument"]["Statement"]
    roles = [{"Ref": role_of(template, f)} for f in functions(template)]
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        attached = policy["Properties"]["Roles"]
        assert len(attached) == 1, f"a policy shared by several roles: {attached}"
        assert attached[0] in roles, "a policy attached to no function"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def event_function(handler: str) -> str:
    return eventstack.function_id(handler)


def event_properties(template: dict[str, Any], handler: str, kind: str) -> dict[str, Any]:
    """The one SAM event of an event function: its stream's or its queue's."""
    events_of = function(template, event_function(handler))["Events"]
    assert list(events_of) == [eventstack.event_source_id(handler, kind)], events_of
    event = events_of[eventstack.event_source_id(handler, kind)]
    assert event["Type"] == {"dynamodb": "DynamoDB", "sqs": "SQS"}[kind]
    return dict(event["Properties"])


CALL = re.compile(r"dynamo\.client\(\)\s*\.\s*([a-z_]+)\(")
HELPER_CALL = re.compile(r"dynamo\.(" + "|".join(dynamo.HELPER_ACTIONS) + r")\(")
MAIN_TABLE = "Table"  # the one svckit.dynamo's helpers and table_name() use, via TABLE_NAME


def arn_of(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def index_arns(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    """The ARNs of the table's own global secondary indexes, as a policy names them."""
    indexes = template["Resources"][logical_id]["Properties"].get("GlobalSecondaryIndexes", [])
    return [{"Fn::Sub": f"${{{logical_id}.Arn}}/index/{i['IndexName']}"} for i in indexes]


def dynamodb_calls_in_code(service: ServiceDef) -> dict[str, set[str]]:
    """The DynamoDB operations the service's own code makes, as IAM action names, by the logical
    id of the table they act on: direct client calls, and the svckit helpers it calls (each
    declares its one action).

    A source file's calls act on the main table unless the file names another table's variable
    (the one ``resources.json`` wires to that table by ``Ref``, e.g. ``"LOGIN_ATTEMPTS_TABLE"``);
    a file that names two is refused, so that no call can be put on the wrong table's account.
    """
    others = {
        service.table_env(logical_id): logical_id
        for logical_id in service.tables()
        if logical_id != MAIN_TABLE
    }
    sources = [
        service.directory / "app.py",
        *sorted((service.directory / "chalicelib").glob("*.py")),
    ]
    calls: dict[str, set[str]] = {}
    for path in sources:
        text = path.read_text()
        named = {logical_id for variable, logical_id in others.items() if f'"{variable}"' in text}
        assert len(named) <= 1, f"{path} names the variables of several tables: {named}"
        table = named.pop() if named else MAIN_TABLE
        direct = {"".join(part.title() for part in call.split("_")) for call in CALL.findall(text)}
        helpers = {dynamo.HELPER_ACTIONS[name] for name in HELPER_CALL.findall(text)}
        if table != MAIN_TABLE:
            assert not helpers, f"{path}: svckit's helpers act on TABLE_NAME, not on {table}"
        actions = {"dynamodb:" + action for action in direct | helpers}
        if actions:
            calls.setdefault(table, set()).update(actions)
    return calls


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_cfn_lint_finds_no_error_or_warning(
    name: str, packaged: dict[str, package.Packaged]
) -> None:
    matches = lint(packaged[name].template_path.read_text())
    problems = [str(m) for m in matches if m.rule.id[0] in "EW"]
    assert problems == []


def test_cfn_lint_finds_no_error_or_warning_in_the_bus_stack(bus_template_path: Path) -> None:
    matches = lint(bus_template_path.read_text())
    problems = [str(m) for m in matches if m.rule.id[0] in "EW"]
    assert problems == []


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_function_runs_python311_with_its_stage_settings(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    service = BY_NAME[name]
    handlers = {package.FUNCTION: "app"} | {
        logical_id: handler for logical_id, handler in eventstack.event_functions(service).items()
    }
    assert sorted(functions(templates[name])) == sorted(handlers)
    for logical_id, handler in handlers.items():
        props = function(templates[name], logical_id)

        def setting(key: str, handler: str = handler) -> Any:
            return eventstack.chalice_setting(service, "dev", handler, key)

        assert props["Runtime"] == "python3.11"
        assert props["Handler"] == f"app.{handler}"
        assert props["MemorySize"] == setting("lambda_memory_size")
        assert props["Timeout"] == setting("lambda_timeout")
        assert props["ReservedConcurrentExecutions"] == setting("reserved_concurrency")


def test_the_event_functions_reserve_their_own_small_share_of_concurrency() -> None:
    """Each relay and consumer has its own ``reserved_concurrency`` in the stage (not the API
    function's 10, which would nearly triple what the stage reserves), so the account check of
    tools/deploy.py and docs/deploy.md's figure hold."""
    for service in (USER, PRODUCT):
        api = eventstack.chalice_setting(service, "dev", "app", "reserved_concurrency")
        assert api == 10
        for handler in eventstack.event_functions(service).values():
            section = service.config()["stages"]["dev"]["lambda_functions"][handler]
            assert section["reserved_concurrency"] == 5, handler
            assert section["iam_policy_file"] == f"policy-dev-{handler.replace('_', '-')}.json"


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_tables_are_the_ones_in_resources_json(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    service = BY_NAME[name]
    tables = resources_of(templates[name], "AWS::DynamoDB::Table")
    assert list(tables) == list(service.tables())
    assert MAIN_TABLE in tables
    for logical_id, table in tables.items():
        declared = service.table_resource(logical_id)["Properties"]
        props = table["Properties"]
        assert props == declared, logical_id
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert "TableName" not in props, "the stack names the table; no name is typed anywhere"
        assert table["DeletionPolicy"] == "Delete", logical_id
        # The local run and the tests build their tables from the same definition.
        local = service.create_table_args("local", logical_id)
        assert local["KeySchema"] == props["KeySchema"]
        assert local["AttributeDefinitions"] == props["AttributeDefinitions"]
        assert local.get("GlobalSecondaryIndexes") == props.get("GlobalSecondaryIndexes")
        assert service.time_to_live(logical_id) == props.get("TimeToLiveSpecification")
    # The data a user cannot recreate is recoverable to any second of the last 35 days.
    main = tables[MAIN_TABLE]["Properties"]
    assert main["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_login_attempt_counters_are_a_table_of_their_own_with_a_time_to_live(
    templates: dict[str, dict[str, Any]],
) -> None:
    """Failed-login counters: keyed by ``counter_key``, expired by DynamoDB's TTL on
    ``expires_at``, no point-in-time recovery (a counter lives minutes; restoring one would only
    restore a lock-out), and their name reaches the function by ``Ref``."""
    template = templates[USER.name]
    table = template["Resources"]["LoginAttemptsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "counter_key", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "counter_key", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": False}
    assert env(template)["LOGIN_ATTEMPTS_TABLE"] == {"Ref": "LoginAttemptsTable"}
    assert USER.table_env("LoginAttemptsTable") == "LOGIN_ATTEMPTS_TABLE"
    assert template["Outputs"]["LoginAttemptsTableName"]["Value"] == {"Ref": "LoginAttemptsTable"}
    counters = [
        s for s in role_statements(template) if s["Resource"] == arn_of("LoginAttemptsTable")
    ]
    assert len(counters) == 1
    assert sorted(as_list(counters[0]["Action"])) == [
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
    ]
    # No other service has such a table or a way to it, nor any other function of user_api.
    for other in (PRODUCT.name, GATEWAY.name):
        assert "LoginAttemptsTable" not in json.dumps(templates[other])
    for logical_id in eventstack.event_functions(USER):
        assert "LoginAttemptsTable" not in json.dumps(list(role_statements(template, logical_id)))


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_table_names_reach_every_function_by_ref(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    template = templates[name]
    assert templates[name]["Outputs"]["TableName"]["Value"] == {"Ref": "Table"}
    for logical_id in functions(template):
        assert env(template, logical_id)["TABLE_NAME"] == {"Ref": "Table"}
        for table in BY_NAME[name].tables():
            variable = BY_NAME[name].table_env(table)
            assert env(template, logical_id)[variable] == {"Ref": table}, (logical_id, table)


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_every_function_of_a_service_gets_the_same_environment(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Chalice gives every function the stage's variables, ``set-by-deploy`` ones included;
    tools.package wires them once for all, so an event function reads the same tables, bus and
    settings as the API function."""
    template = templates[name]
    api = env(template)
    assert api[events.BUS_SETTING] == {"Ref": eventstack.BUS_NAME_PARAMETER}
    assert api[events.PROCESSED_TABLE_SETTING] == {"Ref": topology.PROCESSED_EVENTS_TABLE}
    for logical_id in eventstack.event_functions(BY_NAME[name]):
        assert env(template, logical_id) == api, logical_id


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_no_placeholder_or_local_setting_reaches_a_deployed_function(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    text = json.dumps(templates[name])
    assert events.STREAM_ARN_PLACEHOLDER not in text
    assert events.QUEUE_ARN_PLACEHOLDER not in text
    assert "000000000000" not in text
    for logical_id in functions(templates[name]):
        for key, value in env(templates[name], logical_id).items():
            assert value != package.PLACEHOLDER, (logical_id, key)
            if isinstance(value, str):
                assert not value.startswith("file:"), f"{key} points at a local file"
                assert "127.0.0.1" not in value, key
                assert "localhost" not in value, key


def data_actions_by_table(
    template: dict[str, Any], logical_id: str, name: str
) -> dict[str, set[str]]:
    """The function's DynamoDB data actions by the table they are allowed on (a statement on an
    index counts for its table), after checking each statement's shape: no wildcard action or
    resource, only the services this function has business with."""
    tables = resources_of(template, "AWS::DynamoDB::Table")
    handler = eventstack.event_functions(BY_NAME[name]).get(logical_id)
    data_actions: dict[str, set[str]] = {}
    for statement in role_statements(template, logical_id):
        assert statement["Effect"] == "Allow"
        actions = as_list(statement["Action"])
        assert all("*" not in action for action in actions), f"wildcard action in {statement}"
        services = {a.split(":")[0] for a in actions}
        if services == {"logs"}:
            continue  # CloudWatch Logs: writing the function's own log streams (checked below)
        if services == {"xray"}:
            # Sending its traces: X-Ray has no resource-level permission for these two actions,
            # "*" is the only resource it takes, and nothing else is allowed with it.
            assert statement == package.XRAY_STATEMENT, statement
            continue
        assert "*" not in json.dumps(statement["Resource"]), f"wildcard resource in {statement}"
        if services == {"dynamodb"} and actions != eventstack.STREAM_READ_ACTIONS:
            on = [t for t in tables if statement["Resource"] == arn_of(t)]
            on_index = [t for t in tables if statement["Resource"] in index_arns(template, t)]
            if on_index:
                # An index is read by Query alone: nothing else may name one.
                assert actions == ["dynamodb:Query"], statement
                on = on_index
            else:
                # svckit's query_page reads an index, never the table itself.
                assert "dynamodb:Query" not in actions, f"Query on a table: {statement}"
            assert len(on) == 1, f"not one of its own tables' (or indexes') ARN: {statement}"
            data_actions.setdefault(on[0], set()).update(actions)
        elif services == {"secretsmanager"}:
            assert (name, logical_id) == (USER.name, package.FUNCTION), statement
        else:
            # Stream, bus and queue permissions belong to the event functions alone (their
            # exact shape is checked by the relay and consumer tests below).
            assert handler is not None, f"{logical_id} has an events permission: {statement}"
            assert services <= {"dynamodb", "events", "sqs"}, statement
    return data_actions


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_function_may_touch_only_its_own_tables_with_the_calls_its_code_makes(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Per function, the DynamoDB actions on each table are exactly the ones listed here; and
    together they are exactly what the service's own code calls (svckit's processed-events
    record, made by the consumers through svckit.events, aside: the topology grants it)."""
    template = templates[name]
    by_function = {f: data_actions_by_table(template, f, name) for f in functions(template)}
    together: dict[str, set[str]] = {}
    for actions in by_function.values():
        for table, allowed in actions.items():
            if table != topology.PROCESSED_EVENTS_TABLE:
                together.setdefault(table, set()).update(allowed)
    expected = dynamodb_calls_in_code(BY_NAME[name]) if BY_NAME[name].owns_table else {}
    assert together == expected
    if name == USER.name:
        assert by_function == {
            package.FUNCTION: {
                "Table": {
                    "dynamodb:PutItem",
                    "dynamodb:GetItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:Scan",
                },
                "LoginAttemptsTable": {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"},
            },
            # The points and the event's record are one TransactWriteItems: IAM authorises
            # each of its items as the action it is (an Update, a Put). It never reads the
            # record: a duplicate fails the transaction's condition.
            event_function("on_product_events"): {
                "Table": {"dynamodb:UpdateItem"},
                topology.PROCESSED_EVENTS_TABLE: {"dynamodb:PutItem"},
            },
            event_function("relay_user_changes"): {},
        }
    if name == PRODUCT.name:
        assert by_function == {
            package.FUNCTION: {
                "Table": {
                    "dynamodb:PutItem",
                    "dynamodb:GetItem",
                    "dynamodb:Scan",
                    "dynamodb:Query",
                    "dynamodb:DeleteItem",
                },
                "RevokedAccountsTable": {"dynamodb:GetItem"},
            },
            # The revocation is a put; the cascade is many writes, so the event's record is
            # checked first (GetItem) and written last (PutItem, in a transaction).
            event_function("on_user_events"): {
                "Table": {"dynamodb:Query", "dynamodb:DeleteItem"},
                "RevokedAccountsTable": {"dynamodb:PutItem"},
                topology.PROCESSED_EVENTS_TABLE: {"dynamodb:PutItem", "dynamodb:GetItem"},
            },
            event_function("relay_product_changes"): {},
        }
    if name == GATEWAY.name:
        assert by_function == {package.FUNCTION: {}}


PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
}


def resolved(value: Any, refs: dict[str, str]) -> str:
    """A string as CloudFormation would resolve it: ``Ref`` and ``Fn::Sub`` of known names."""
    if isinstance(value, str):
        return value
    if set(value) == {"Ref"}:
        return refs[value["Ref"]]
    assert set(value) == {"Fn::Sub"}, value
    assert isinstance(value["Fn::Sub"], str), value
    text = value["Fn::Sub"]
    for name, replacement in refs.items():
        text = text.replace("${" + name + "}", replacement)
    assert "${" not in text, f"unresolved in {text}"
    return text


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_logs_permission_is_only_each_function_own_log_group(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Each function may write log streams of its own log group and of no other: not every
    Lambda's group in every region and account (what ``/aws/lambda/*`` allowed), nor another
    function's of the same service."""
    template = templates[name]
    refs = {**PSEUDO, "AWS::StackName": f"shop-dev-{name.replace('_', '-')}"}
    names = set()
    for logical_id in functions(template):
        function_name = resolved(function(template, logical_id)["FunctionName"], refs)
        names.add(function_name)
        log_group = template["Resources"][f"{logical_id}LogGroup"]["Properties"]["LogGroupName"]
        assert resolved(log_group, {**refs, logical_id: function_name}) == (
            f"/aws/lambda/{function_name}"
        )
        logs = [
            s
            for s in role_statements(template, logical_id)
            if any(a.startswith("logs:") for a in as_list(s["Action"]))
        ]
        assert len(logs) == 1, logs
        assert sorted(as_list(logs[0]["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
        assert [resolved(r, refs) for r in as_list(logs[0]["Resource"])] == [
            f"arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/{function_name}:*"
        ]
    assert len(names) == len(functions(template))


def test_only_user_api_can_read_the_signing_key(templates: dict[str, dict[str, Any]]) -> None:
    user = templates[USER.name]
    secret_statements = [
        s
        for s in role_statements(user)
        if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))
    ]
    assert secret_statements == [
        {
            "Sid": "SigningKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "SigningKeySecretArn"},
        }
    ]
    assert env(user)["JWT_SIGNING_KEY"] == {"Fn::Sub": "secretsmanager:${SigningKeySecretArn}"}
    # user_api's event functions carry the same setting (every function gets the same
    # environment) but their roles cannot read the secret.
    for logical_id in eventstack.event_functions(USER):
        statements = json.dumps(list(role_statements(user, logical_id)))
        assert "secretsmanager" not in statements
        assert "SigningKeySecretArn" not in statements
    for other in (PRODUCT.name, GATEWAY.name):
        text = json.dumps(templates[other])
        assert "secretsmanager" not in text
        assert "SigningKey" not in text
        assert "JWT_SIGNING_KEY" not in env(templates[other])


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_the_stage_name_reaches_every_function_from_packaging_not_from_config(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Tokens name their stage (iss, aud) from STAGE; the value is the stage packaged, so a
    stage whose config section was copied from another still names itself."""
    for logical_id in functions(templates[name]):
        assert env(templates[name], logical_id)["STAGE"] == "dev", logical_id
    config = BY_NAME[name].config()
    for section in (config, *config["stages"].values()):
        assert "STAGE" not in section.get("environment_variables", {})
        for per_function in section.get("lambda_functions", {}).values():
            assert "STAGE" not in per_function.get("environment_variables", {})
    merged = package.merge_fragment(BY_NAME[name], "prod")["Resources"]
    for logical_id in functions(templates[name]):
        assert merged[logical_id]["Properties"]["Environment"]["Variables"]["STAGE"] == "prod"


def test_no_per_stage_name_is_configured_in_a_deployed_stage() -> None:
    """The signing key's secret once came from user_api's JWT_SIGNING_KEY, so a stage copied
    from dev shared dev's key; now the deploy derives it and the stack wires its ARN."""
    for service in SERVICES:
        for stage, section in service.config()["stages"].items():
            if stage == "local":
                continue
            for key, value in section.get("environment_variables", {}).items():
                names_something = ("secretsmanager:", "/shop/", "shop-", f"-{stage}")
                assert not any(m in value for m in names_something), (service.name, stage, key)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_public_jwks_arrives_inline_from_the_ssm_parameter(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    template = templates[name]
    for logical_id in functions(template):
        assert env(template, logical_id)["JWT_JWKS"] == {"Ref": "JwksParameterName"}
    parameter = template["Parameters"]["JwksParameterName"]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert "Default" not in parameter  # the deploy names the stage's parameter


def test_gateway_gets_the_service_urls_from_the_other_stacks(
    templates: dict[str, dict[str, Any]],
) -> None:
    gateway = templates[GATEWAY.name]
    assert env(gateway)["USER_API_URL"] == {"Ref": "UserApiUrl"}
    assert env(gateway)["PRODUCT_API_URL"] == {"Ref": "ProductApiUrl"}
    for parameter in ("UserApiUrl", "ProductApiUrl"):
        assert "Default" not in gateway["Parameters"][parameter], "no URL typed by hand"
    for name in (USER.name, PRODUCT.name):
        assert "EndpointURL" in templates[name]["Outputs"]
        assert "RestAPIId" in templates[name]["Outputs"]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_route_goes_to_the_one_function_without_an_api_gateway_authorizer(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Tokens are verified in the app (svckit), whose 401 has the contract's shape; an API
    Gateway authorizer would answer with its own body. Write routes' 401 is proven on the zip."""
    body = templates[name]["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    assert "securityDefinitions" not in body
    operations = [
        (path, method, op) for path, item in body["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 3
    for path, method, op in operations:
        assert "security" not in op, (path, method)
        integration = op["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert "${APIHandler.Arn}" in integration["uri"]["Fn::Sub"], (path, method)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_api_gateway_own_errors_use_the_contract_shape(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    body = templates[name]["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    for required in ("DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED", "MISSING_AUTHENTICATION_TOKEN"):
        assert required in responses
    for kind, response in responses.items():
        text = response["responseTemplates"]["application/json"]
        # API Gateway substitutes the message already quoted as a JSON string.
        rendered = json.loads(text.replace("$context.error.messageString", '"some message"'))
        assert set(rendered) == {"Code", "Message"}, kind
        assert rendered["Code"].endswith("Error"), kind
    assert responses["THROTTLED"]["statusCode"] == "429"
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    assert "statusCode" not in responses["DEFAULT_4XX"]  # keeps API Gateway's own status


def gateway_responses(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every answer API Gateway makes without calling the function, by response type: those in
    the API's Swagger body and any ``AWS::ApiGateway::GatewayResponse`` resource."""
    body = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    found = dict(body.get("x-amazon-apigateway-gateway-responses", {}))
    for resource in resources_of(template, "AWS::ApiGateway::GatewayResponse").values():
        props = resource["Properties"]
        found[props["ResponseType"]] = {
            "statusCode": props.get("StatusCode"),
            "responseParameters": props.get("ResponseParameters", {}),
            "responseTemplates": props.get("ResponseTemplates", {}),
        }
    return found


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_api_gateway_own_answer_carries_a_request_id_and_the_contract_shape(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """API Gateway answers some requests itself (no route, throttled, too large, its own
    failures); those never reach the middleware that adds ``X-Request-Id``, so the header must
    come from the gateway response, mapped from API Gateway's own request id."""
    responses = gateway_responses(templates[name])
    for required in (
        "MISSING_AUTHENTICATION_TOKEN",
        "RESOURCE_NOT_FOUND",
        "REQUEST_TOO_LARGE",
        "THROTTLED",
        "QUOTA_EXCEEDED",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    ):
        assert required in responses, required
    for kind, response in responses.items():
        assert response.get("responseParameters") == {
            "gatewayresponse.header.X-Request-Id": "context.requestId"
        }, kind
        templates_by_type = response["responseTemplates"]
        assert set(templates_by_type) == {"application/json"}, kind
        text = templates_by_type["application/json"]
        rendered = json.loads(text.replace("$context.error.messageString", '"some message"'))
        assert set(rendered) == {"Code", "Message"}, kind
        assert isinstance(rendered["Message"], str), kind
        assert rendered["Message"], kind
        # The template is VTL: a literal '$' or '#' in our own text would be evaluated.
        assert "#" not in text, kind
        assert text.count("$") == text.count("$context.error.messageString"), kind
    missing_route = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing_route["statusCode"] == "404"
    assert json.loads(missing_route["responseTemplates"]["application/json"])["Code"] == (
        "NotFoundError"
    )
    assert responses["RESOURCE_NOT_FOUND"]["statusCode"] == "404"
    assert responses["REQUEST_TOO_LARGE"]["statusCode"] == "413"
    assert responses["THROTTLED"]["statusCode"] == "429"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_stage_is_throttled_and_logs_expire_with_the_stack(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    template = templates[name]
    settings = template["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    assert settings == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
        }
    ]
    assert template["Parameters"]["ThrottlingRateLimit"]["Default"] > 0
    assert template["Parameters"]["ThrottlingBurstLimit"]["Default"] > 0
    groups = resources_of(template, "AWS::Logs::LogGroup")
    assert sorted(groups) == sorted(f"{f}LogGroup" for f in functions(template))
    for logical_id in functions(template):
        log_group = groups[f"{logical_id}LogGroup"]
        assert log_group["Properties"] == {
            "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{logical_id}}}"},
            "RetentionInDays": {"Ref": "LogRetentionDays"},
        }
        assert log_group["DeletionPolicy"] == "Delete"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_zip_carries_the_current_shared_library_and_no_copy_stays_behind(
    name: str, packaged: dict[str, package.Packaged], svckit_at_packaging: dict[str, bytes]
) -> None:
    with zipfile.ZipFile(packaged[name].zip_path) as archive:
        shipped = {n: archive.read(n) for n in archive.namelist() if n.startswith("svckit/")}
    assert {n: b for n, b in shipped.items() if n.endswith(".py")} == svckit_at_packaging
    assert not any(n.endswith(".pyc") for n in shipped)
    assert not (BY_NAME[name].directory / "vendor" / "svckit").exists()


def test_merge_follows_chalice_own_merge_rule() -> None:
    from chalice.package import TemplateDeepMerger

    base = {"A": {"x": 1, "l": [1, 2]}, "B": 2}
    fragment = {"A": {"y": 3, "l": [9]}, "C": {"z": 4}}
    assert package.deep_merge(base, fragment) == TemplateDeepMerger().merge(fragment, base)
    assert package.deep_merge(base, fragment)["A"] == {"x": 1, "y": 3, "l": [9]}


def _broken(template: dict[str, Any], change: Any) -> dict[str, Any]:
    """A deep copy of ``template`` with ``change`` applied to it."""
    copied = copy.deepcopy(template)
    change(copied)
    return copied


def _statement(template: dict[str, Any], role: str) -> dict[str, Any]:
    statements = template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    return dict(statements["Statement"][0])


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_check_template_accepts_what_packaging_made(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    package.check_template(BY_NAME[name], templates[name], "dev")


def test_check_template_refuses_a_wrong_runtime_stage_name_or_an_unwired_variable(
    templates: dict[str, dict[str, Any]],
) -> None:
    """Each check, on every function: the API's and an event function's."""
    good = templates[USER.name]
    relay = event_function("relay_user_changes")
    for logical_id in (package.FUNCTION, relay):

        def props(t: dict[str, Any], logical_id: str = logical_id) -> dict[str, Any]:
            return t["Resources"][logical_id]["Properties"]

        def variables(t: dict[str, Any], logical_id: str = logical_id) -> dict[str, Any]:
            return props(t, logical_id)["Environment"]["Variables"]

        with pytest.raises(package.PackageError, match="FunctionName"):
            package.check_template(
                USER, _broken(good, lambda t: props(t).pop("FunctionName")), "dev"
            )
        with pytest.raises(package.PackageError, match=r"python3\.11"):
            package.check_template(
                USER, _broken(good, lambda t: props(t).update(Runtime="python3.12")), "dev"
            )
        with pytest.raises(package.PackageError, match="B still"):
            package.check_template(
                USER,
                _broken(good, lambda t: variables(t).update(B=package.PLACEHOLDER)),
                "dev",
            )
        with pytest.raises(package.PackageError, match="no log group"):
            package.check_template(
                USER,
                _broken(good, lambda t, lid=logical_id: t["Resources"].pop(f"{lid}LogGroup")),
                "dev",
            )
    with pytest.raises(package.PackageError, match="not the packaged stage 'prod'"):
        package.check_template(USER, good, "prod")


def test_check_template_refuses_a_logs_permission_wider_than_the_function_own_group(
    templates: dict[str, dict[str, Any]],
) -> None:
    good = templates[USER.name]
    for role in ("ApiHandlerRole", eventstack.role_id("on_product_events")):
        assert _statement(good, role)["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]

        def widen(t: dict[str, Any], role: str = role) -> None:
            policy = t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
            policy["Statement"][0]["Resource"] = "arn:*:logs:*:*:log-group:/aws/lambda/*:*"

        with pytest.raises(package.PackageError, match="only the function's own log group"):
            package.check_template(USER, _broken(good, widen), "dev")

    # Another function's log group of the same stack is just as wrong.
    def neighbour(t: dict[str, Any]) -> None:
        role = eventstack.role_id("relay_user_changes")
        policy = t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
        policy["Statement"][0]["Resource"] = package.own_log_group_arn("-on-product-events")

    with pytest.raises(package.PackageError, match="only the function's own log group"):
        package.check_template(USER, _broken(good, neighbour), "dev")


def test_check_template_refuses_what_the_events_cannot_run_with(
    templates: dict[str, dict[str, Any]],
) -> None:
    good = templates[PRODUCT.name]
    relay = event_function("relay_product_changes")
    consumer = event_function("on_user_events")

    def placeholder_stream(t: dict[str, Any]) -> None:
        event = t["Resources"][relay]["Properties"]["Events"]
        next(iter(event.values()))["Properties"]["Stream"] = events.STREAM_ARN_PLACEHOLDER

    def placeholder_queue(t: dict[str, Any]) -> None:
        event = t["Resources"][consumer]["Properties"]["Events"]
        next(iter(event.values()))["Properties"]["Queue"] = events.QUEUE_ARN_PLACEHOLDER

    def shared_role(t: dict[str, Any]) -> None:
        t["Resources"][consumer]["Properties"]["Role"] = {"Fn::GetAtt": ["ApiHandlerRole", "Arn"]}

    def slow_consumer(t: dict[str, Any]) -> None:
        t["Resources"][consumer]["Properties"]["Timeout"] = 11  # 6 x 11 > 60

    def no_stream(t: dict[str, Any]) -> None:
        t["Resources"]["Table"]["Properties"].pop("StreamSpecification")

    def unknown_function(t: dict[str, Any]) -> None:
        t["Resources"]["Nightly"] = copy.deepcopy(t["Resources"][relay])

    cases = {
        "placeholder ARN": placeholder_stream,
        "placeholder ARN ": placeholder_queue,
        "shares the role|not a role of its own": shared_role,
        "visibility timeout": slow_consumer,
        "NEW_AND_OLD_IMAGES": no_stream,
        "does not know": unknown_function,
        f"no function {relay}": lambda t: t["Resources"].pop(relay),
    }
    for message, change in cases.items():
        with pytest.raises(package.PackageError, match=message.strip()):
            package.check_template(PRODUCT, _broken(good, change), "dev")


def test_resources_json_files_are_valid_fragments() -> None:
    """Every fragment merges into a template section CloudFormation knows."""
    for service in SERVICES:
        fragment = json.loads(Path(service.directory / "resources.json").read_text())
        assert set(fragment) <= {"Parameters", "Resources", "Outputs", "Conditions"}


# --- events ------------------------------------------------------------------------------


def test_bus_stack_is_the_bus_and_an_archive_of_every_source(bus_template_path: Path) -> None:
    template = json.loads(bus_template_path.read_text())
    assert template == eventstack.bus_template("dev")
    resources = template["Resources"]
    assert sorted(resources) == [eventstack.ARCHIVE, eventstack.BUS]
    assert resources[eventstack.BUS] == {
        "Type": "AWS::Events::EventBus",
        "Properties": {"Name": topology.bus_name("dev")},
    }
    archive = resources[eventstack.ARCHIVE]
    assert archive["Type"] == "AWS::Events::Archive"
    assert archive["Properties"]["SourceArn"] == arn_of(eventstack.BUS)
    assert archive["Properties"]["RetentionDays"] == topology.ARCHIVE_RETENTION_DAYS
    # Everything the services publish, and a replay window no longer than the consumers
    # remember what they applied (so a replay applies nothing twice).
    assert archive["Properties"]["EventPattern"] == {
        "source": sorted([events.USER_SOURCE, events.PRODUCT_SOURCE])
    }
    assert topology.ARCHIVE_RETENTION_DAYS * 24 * 3600 < events.PROCESSED_RETENTION_SECONDS
    outputs = template["Outputs"]
    assert outputs[eventstack.BUS_NAME_PARAMETER]["Value"] == {
        "Fn::GetAtt": [eventstack.BUS, "Name"]
    }
    assert outputs[eventstack.BUS_ARN_PARAMETER]["Value"] == arn_of(eventstack.BUS)
    assert eventstack.bus_template("qa")["Resources"][eventstack.BUS]["Properties"]["Name"] == (
        "shop-qa"
    )


def test_every_subscription_listens_to_a_source_some_relay_publishes() -> None:
    published = {relay.source for relay in topology.RELAYS}
    assert {sub.source for sub in topology.SUBSCRIPTIONS} <= published
    assert set(eventstack.bus_sources()) == published


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_bus_reaches_the_service_stacks_as_parameters_without_defaults(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    parameters = templates[name]["Parameters"]
    for parameter in (eventstack.BUS_NAME_PARAMETER, eventstack.BUS_ARN_PARAMETER):
        assert parameters[parameter]["Type"] == "String"
        assert "Default" not in parameters[parameter], "the deploy passes the bus stack's output"
    assert eventstack.BUS_NAME_PARAMETER not in templates[GATEWAY.name]["Parameters"]
    assert "EventBus" not in json.dumps(templates[GATEWAY.name])


@pytest.mark.parametrize("handler", sorted(RELAYS))
def test_relay_reads_its_own_table_stream_with_the_topology_retry_settings(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    relay = RELAYS[handler]
    template = templates[relay.service.name]
    props = event_properties(template, handler, "dynamodb")
    assert props == {
        "Stream": {"Fn::GetAtt": [relay.table, "StreamArn"]},
        "BatchSize": relay.batch_size,
        "StartingPosition": "TRIM_HORIZON",
        "MaximumBatchingWindowInSeconds": 0,
        "MaximumRetryAttempts": relay.maximum_retry_attempts,
        "BisectBatchOnFunctionError": True,
        "MaximumRecordAgeInSeconds": relay.maximum_record_age_seconds,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "DestinationConfig": {
            "OnFailure": {"Type": "SQS", "Destination": arn_of(relay.failure_queue)}
        },
    }
    # A relay that cannot publish holds its shard (retried until its records are a day old,
    # what the stream keeps anyway) rather than discarding the rest of the batch: its
    # IteratorAge alarm (tools/observability.py) is what shows the shard held.
    assert props["MaximumRetryAttempts"] == -1
    assert props["MaximumRecordAgeInSeconds"] == 24 * 3600
    table = template["Resources"][relay.table]["Properties"]
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    failures = template["Resources"][relay.failure_queue]
    assert failures["Type"] == "AWS::SQS::Queue"
    assert failures["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert failures["Properties"]["SqsManagedSseEnabled"] is True
    assert env(template, event_function(handler))[events.BUS_SETTING] == {
        "Ref": eventstack.BUS_NAME_PARAMETER
    }


@pytest.mark.parametrize("handler", sorted(RELAYS))
def test_relay_may_read_only_its_stream_and_publish_only_its_source_to_the_bus(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    relay = RELAYS[handler]
    template = templates[relay.service.name]
    statements = [
        s
        for s in role_statements(template, event_function(handler))
        if not all(a.startswith(("logs:", "xray:")) for a in as_list(s["Action"]))
    ]
    for statement in statements:
        statement.pop("Sid", None)
    assert sorted(statements, key=json.dumps) == sorted(
        [
            {
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams",
                ],
                "Resource": {"Fn::GetAtt": [relay.table, "StreamArn"]},
            },
            {
                "Effect": "Allow",
                "Action": "events:PutEvents",
                "Resource": {"Ref": eventstack.BUS_ARN_PARAMETER},
                "Condition": {"StringEquals": {"events:source": relay.source}},
            },
            {
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": arn_of(relay.failure_queue),
            },
        ],
        key=json.dumps,
    )


@pytest.mark.parametrize("handler", sorted(SUBSCRIPTIONS))
def test_subscription_queue_has_its_dead_letter_queue_and_its_rule_on_the_bus(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    sub = SUBSCRIPTIONS[handler]
    resources = templates[sub.service.name]["Resources"]
    queue = resources[sub.queue]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["VisibilityTimeout"] == sub.visibility_timeout_seconds
    assert queue["Properties"]["MessageRetentionPeriod"] == topology.QUEUE_RETENTION_SECONDS
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": arn_of(sub.dead_letter_queue),
        "maxReceiveCount": sub.max_receive_count,
    }
    dead_letters = resources[sub.dead_letter_queue]["Properties"]
    assert dead_letters["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "RedrivePolicy" not in dead_letters
    rule = resources[sub.rule]
    assert rule["Type"] == "AWS::Events::Rule"
    assert rule["Properties"]["EventBusName"] == {"Ref": eventstack.BUS_NAME_PARAMETER}
    assert rule["Properties"]["EventPattern"] == {
        "source": [sub.source],
        "detail-type": list(sub.types),
    }
    assert rule["Properties"]["State"] == "ENABLED"
    # Its one target: the queue, and for what EventBridge cannot deliver (after a day of
    # retries, or at once for a permission or not-found error, which it never retries) the
    # consumer's own dead-letter queue, where make dlq finds it; without it the event is dropped.
    assert rule["Properties"]["Targets"] == [
        {
            "Id": sub.queue,
            "Arn": arn_of(sub.queue),
            "DeadLetterConfig": {"Arn": arn_of(sub.dead_letter_queue)},
            "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400},
        }
    ]
    # The only rule of the service, and the only target sending to this queue.
    assert list(resources_of(templates[sub.service.name], "AWS::Events::Rule")) == [sub.rule]


@pytest.mark.parametrize("handler", sorted(SUBSCRIPTIONS))
def test_only_its_own_rule_may_send_to_a_subscription_queue(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    """The subscription queue, and its dead-letter queue (the rule's target dead-letters there):
    EventBridge may send to each only on behalf of the subscription's own rule."""
    sub = SUBSCRIPTIONS[handler]
    template = templates[sub.service.name]
    policies = resources_of(template, "AWS::SQS::QueuePolicy")
    assert sorted(policies) == sorted([f"{sub.queue}Policy", f"{sub.dead_letter_queue}Policy"])
    for queue, sid in (
        (sub.queue, "OwnRuleOnly"),
        (sub.dead_letter_queue, "OwnRuleDeadLettersOnly"),
    ):
        props = policies[f"{queue}Policy"]["Properties"]
        assert props["Queues"] == [{"Ref": queue}]
        assert props["PolicyDocument"]["Statement"] == [
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn_of(queue),
                "Condition": {"ArnEquals": {"aws:SourceArn": arn_of(sub.rule)}},
            }
        ]
    # No queue policy on the relay's failure queue: only Lambda (through the relay's role) puts
    # messages there.
    assert all(
        {"Ref": r.failure_queue} not in p["Properties"]["Queues"]
        for p in policies.values()
        for r in topology.RELAYS
    )


@pytest.mark.parametrize("handler", sorted(SUBSCRIPTIONS))
def test_consumer_drains_its_own_queue_reporting_single_failures(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    sub = SUBSCRIPTIONS[handler]
    template = templates[sub.service.name]
    logical_id = event_function(handler)
    props = event_properties(template, handler, "sqs")
    reserved = function(template, logical_id)["ReservedConcurrentExecutions"]
    assert props == {
        "Queue": arn_of(sub.queue),
        "BatchSize": sub.batch_size,
        "MaximumBatchingWindowInSeconds": 0,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        # Never more pollers than the function may run: a throttled batch would go back to
        # the queue with a receive spent, and reach the dead-letter queue for nothing.
        "ScalingConfig": {"MaximumConcurrency": reserved},
    }
    assert 2 <= reserved <= 1000  # the range Lambda accepts for MaximumConcurrency
    assert env(template, logical_id)[events.PROCESSED_TABLE_SETTING] == {
        "Ref": topology.PROCESSED_EVENTS_TABLE
    }


@pytest.mark.parametrize("handler", sorted(SUBSCRIPTIONS))
def test_queue_visibility_timeout_is_at_least_six_times_the_consumer_timeout(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    """AWS's rule for a queue that feeds a function: otherwise a message still being worked on
    becomes visible again and a second invocation runs it too."""
    sub = SUBSCRIPTIONS[handler]
    template = templates[sub.service.name]
    timeout = function(template, event_function(handler))["Timeout"]
    visibility = template["Resources"][sub.queue]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * timeout


@pytest.mark.parametrize("handler", sorted(SUBSCRIPTIONS))
def test_consumer_may_touch_only_its_own_queue_and_processed_events(
    handler: str, templates: dict[str, dict[str, Any]]
) -> None:
    sub = SUBSCRIPTIONS[handler]
    checks = sub.checks_before_applying
    template = templates[sub.service.name]
    events_policy = template["Resources"][eventstack.events_policy_id(handler)]
    assert events_policy["Properties"]["Roles"] == [{"Ref": eventstack.role_id(handler)}]
    statements = events_policy["Properties"]["PolicyDocument"]["Statement"]
    assert [{k: v for k, v in s.items() if k != "Sid"} for s in statements] == [
        {
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
            ],
            "Resource": arn_of(sub.queue),
        },
        {
            "Effect": "Allow",
            # Recording an event is a Put (in a transaction); reading the record first, only
            # for a consumer that checks before applying.
            "Action": ["dynamodb:PutItem"] + (["dynamodb:GetItem"] if checks else []),
            "Resource": arn_of(topology.PROCESSED_EVENTS_TABLE),
        },
    ]
    # Nothing else in any of its statements names a queue, a stream or the bus.
    for statement in role_statements(template, event_function(handler)):
        actions = as_list(statement["Action"])
        if any(a.startswith("sqs:") for a in actions):
            assert statement["Resource"] == arn_of(sub.queue)
        assert not any(a.startswith("events:") for a in actions)
        assert "StreamArn" not in json.dumps(statement)


def test_a_consumer_checks_before_applying_exactly_when_its_code_reads_its_record() -> None:
    """``checks_before_applying`` (GetItem on the processed-events table) is what the consumer's
    service code does: it calls ``svckit.events.was_applied``, the only read of that table."""
    events_source = (Path(dynamo.__file__).parent / "events.py").read_text()
    assert events_source.count("get_item(") == 1
    was_applied = events_source.split("def was_applied(")[1].split("\ndef ")[0]
    assert "get_item(" in was_applied
    for sub in topology.SUBSCRIPTIONS:
        sources = [sub.service.directory / "app.py"]
        sources += sorted((sub.service.directory / "chalicelib").glob("*.py"))
        reads = any("events.was_applied(" in path.read_text() for path in sources)
        assert sub.checks_before_applying == reads, sub.handler


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_no_function_reads_another_function_stream_or_queue(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    template = templates[name]
    service = BY_NAME[name]
    own: dict[str, set[str]] = {logical_id: set() for logical_id in functions(template)}
    for relay in topology.relays_of(service):
        own[event_function(relay.handler)] = {relay.failure_queue, relay.table}
    for sub in topology.subscriptions_of(service):
        own[event_function(sub.handler)] = {sub.queue}
    for logical_id in functions(template):
        for statement in role_statements(template, logical_id):
            actions = as_list(statement["Action"])
            if any(a.startswith("sqs:") for a in actions):
                assert statement["Resource"]["Fn::GetAtt"][0] in own[logical_id], statement
            if any(a in eventstack.STREAM_READ_ACTIONS for a in actions):
                assert statement["Resource"]["Fn::GetAtt"][0] in own[logical_id], statement
            if any(a.startswith("events:") for a in actions):
                assert logical_id in {event_function(r.handler) for r in topology.RELAYS}


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_each_function_waits_for_every_policy_of_its_role(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Lambda checks the role when it creates an event source mapping, which follows the
    function: the function must wait for the role's separate policies, or the mapping races
    them."""
    template = templates[name]
    for logical_id in functions(template):
        role = {"Ref": role_of(template, logical_id)}
        attached = {
            policy_id
            for policy_id, policy in resources_of(template, "AWS::IAM::Policy").items()
            if role in policy["Properties"]["Roles"]
        }
        assert attached, logical_id
        assert set(as_list(template["Resources"][logical_id].get("DependsOn", []))) >= attached


@pytest.mark.parametrize("name", DATA_SERVICES)
@pytest.mark.parametrize("stage", ["dev", LONGEST_STAGE])
def test_stack_made_names_are_the_topology_names_and_fit_aws_limits(
    name: str, stage: str, templates: dict[str, dict[str, Any]]
) -> None:
    """Queue, rule and function names are written ``${AWS::StackName}-...``; resolved with the
    deploy's stack name they are the names tools/topology.py gives (the local wiring and the
    operator's dead-letter command use those), within AWS's limits for the longest stage."""
    service = BY_NAME[name]
    template = package.merge_fragment(service, stage)
    refs = {"AWS::StackName": deploy.Naming(stage).stack(service)}
    resources = template["Resources"]

    def name_of(logical_id: str, key: str) -> str:
        return resolved(resources[logical_id]["Properties"][key], refs)

    expected = {}
    for relay in topology.relays_of(service):
        expected[relay.failure_queue] = relay.failure_queue_name(stage)
    for sub in topology.subscriptions_of(service):
        expected[sub.queue] = sub.queue_name(stage)
        expected[sub.dead_letter_queue] = sub.dead_letter_queue_name(stage)
    for logical_id, wanted in expected.items():
        assert name_of(logical_id, "QueueName") == wanted
        assert len(wanted) <= eventstack.NAME_LIMITS["queue"]
    for sub in topology.subscriptions_of(service):
        assert name_of(sub.rule, "Name") == sub.rule_name(stage)
        assert len(sub.rule_name(stage)) <= eventstack.NAME_LIMITS["rule"]
    for logical_id, handler in eventstack.event_functions(service).items():
        function_name = name_of(logical_id, "FunctionName")
        assert function_name == f"{refs['AWS::StackName']}-{handler.replace('_', '-')}"
        assert len(function_name) <= eventstack.NAME_LIMITS["function"]
