"""The packaged templates say what the deploy promises: lint-clean, least privilege, wired by Ref.

These read ``sam.json`` as ``tools.package`` leaves it (the file CloudFormation receives, apart
from the S3 place of the code), so a change to a ``resources.json``, a ``config.json`` or the app
that breaks a promise fails here, before anyone deploys.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint

from svckit import dynamo
from tools import package
from tools.services import GATEWAY, PRODUCT, SERVICES, USER, ServiceDef

pytestmark = pytest.mark.deploy

SERVICE_NAMES = [s.name for s in SERVICES]

BY_NAME = {s.name: s for s in SERVICES}
DATA_SERVICES = [USER.name, PRODUCT.name]


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def function(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"][package.FUNCTION]["Properties"]


def env(template: dict[str, Any]) -> dict[str, Any]:
    return function(template)["Environment"]["Variables"]


def role_statements(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every IAM statement that reaches the function: its role's inline policies and every
    ``AWS::IAM::Policy`` attached to that role."""
    role_ref = function(template)["Role"]
    assert set(role_ref) == {"Fn::GetAtt"}, role_ref
    role_id = role_ref["Fn::GetAtt"][0]
    role = template["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role"
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            yield from policy["Properties"]["PolicyDocument"]["Statement"]
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        assert {"Ref": role_id} in policy["Properties"]["Roles"], "a policy attached to no function"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


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


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_function_runs_python311_with_the_stage_settings(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    props = function(templates[name])
    config = BY_NAME[name].config()
    stage = {**config, **config["stages"]["dev"]}
    assert props["Runtime"] == "python3.11"
    assert props["Handler"] == "app.app"
    assert props["MemorySize"] == stage["lambda_memory_size"]
    assert props["Timeout"] == stage["lambda_timeout"]
    assert props["ReservedConcurrentExecutions"] == stage["reserved_concurrency"]


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
    # No other service has such a table or a way to it.
    for other in (PRODUCT.name, GATEWAY.name):
        assert "LoginAttemptsTable" not in json.dumps(templates[other])


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_table_name_reaches_the_function_by_ref(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    assert env(templates[name])["TABLE_NAME"] == {"Ref": "Table"}
    assert templates[name]["Outputs"]["TableName"]["Value"] == {"Ref": "Table"}
    for logical_id in BY_NAME[name].tables():
        variable = BY_NAME[name].table_env(logical_id)
        assert env(templates[name])[variable] == {"Ref": logical_id}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_no_placeholder_or_local_setting_reaches_a_deployed_function(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    for key, value in env(templates[name]).items():
        assert value != package.PLACEHOLDER, key
        if isinstance(value, str):
            assert not value.startswith("file:"), f"{key} points at a local file"
            assert "127.0.0.1" not in value, key
            assert "localhost" not in value, key


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_function_may_touch_only_its_own_table_with_the_calls_its_code_makes(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    statements = list(role_statements(templates[name]))
    tables = resources_of(templates[name], "AWS::DynamoDB::Table")
    data_actions: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = as_list(statement["Action"])
        assert all("*" not in action for action in actions), f"wildcard action in {statement}"
        services = {a.split(":")[0] for a in actions}
        if services == {"logs"}:
            continue  # CloudWatch Logs: writing the function's own log streams
        assert "*" not in json.dumps(statement["Resource"]), f"wildcard resource in {statement}"
        if services == {"dynamodb"}:
            on = [
                logical_id for logical_id in tables if statement["Resource"] == arn_of(logical_id)
            ]
            on_index = [
                logical_id
                for logical_id in tables
                if statement["Resource"] in index_arns(templates[name], logical_id)
            ]
            if on_index:
                # An index is read by Query alone: nothing else may name one.
                assert actions == ["dynamodb:Query"], statement
                on = on_index
            else:
                # svckit's query_page reads an index, never the table itself.
                assert "dynamodb:Query" not in actions, f"Query on a table: {statement}"
            assert len(on) == 1, f"not one of its own tables' (or indexes') ARN: {statement}"
            data_actions.setdefault(on[0], set()).update(actions)
        else:
            assert services == {"secretsmanager"}, statement
            assert name == USER.name, statement
    expected = dynamodb_calls_in_code(BY_NAME[name]) if BY_NAME[name].owns_table else {}
    assert data_actions == expected
    if name == USER.name:
        assert expected == {
            "Table": {
                "dynamodb:PutItem",
                "dynamodb:GetItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:Scan",
            },
            "LoginAttemptsTable": {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"},
        }
    if name == PRODUCT.name:
        assert expected == {
            "Table": {
                "dynamodb:PutItem",
                "dynamodb:GetItem",
                "dynamodb:Scan",
                "dynamodb:Query",
                "dynamodb:DeleteItem",
            }
        }


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
def test_logs_permission_is_only_the_function_own_log_group(
    name: str, templates: dict[str, dict[str, Any]]
) -> None:
    """The function may write log streams of its own log group and of no other: not every
    Lambda's group in every region and account (what ``/aws/lambda/*`` allowed)."""
    template = templates[name]
    refs = {**PSEUDO, "AWS::StackName": f"shop-dev-{name.replace('_', '-')}"}
    function_name = resolved(function(template)["FunctionName"], refs)
    refs["APIHandler"] = function_name  # what Ref gives for a function
    log_group = template["Resources"]["APIHandlerLogGroup"]["Properties"]["LogGroupName"]
    assert resolved(log_group, refs) == f"/aws/lambda/{function_name}"
    logs = [
        s
        for s in role_statements(template)
        if any(a.startswith("logs:") for a in as_list(s["Action"]))
    ]
    assert len(logs) == 1, logs
    assert sorted(as_list(logs[0]["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert [resolved(r, refs) for r in as_list(logs[0]["Resource"])] == [
        f"arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/{function_name}:*"
    ]


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
    assert env(templates[name])["STAGE"] == "dev"
    config = BY_NAME[name].config()
    for section in (config, *config["stages"].values()):
        assert "STAGE" not in section.get("environment_variables", {})
    merged = package.merge_fragment(BY_NAME[name], "prod")["Resources"][package.FUNCTION]
    assert merged["Properties"]["Environment"]["Variables"]["STAGE"] == "prod"


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
    assert env(template)["JWT_JWKS"] == {"Ref": "JwksParameterName"}
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
    log_group = template["Resources"]["APIHandlerLogGroup"]
    assert log_group["Properties"]["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${APIHandler}"}
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


def test_check_template_refuses_a_wrong_runtime_or_an_unwired_variable() -> None:
    good = {
        "Resources": {
            package.FUNCTION: {
                "Properties": {
                    "FunctionName": {"Ref": "AWS::StackName"},
                    "Runtime": "python3.11",
                    "Environment": {"Variables": {"A": "1", "STAGE": "dev"}},
                }
            },
            "ApiHandlerRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Policies": [
                        {
                            "PolicyName": "p",
                            "PolicyDocument": {
                                "Statement": [
                                    {
                                        "Effect": "Allow",
                                        "Action": ["logs:PutLogEvents"],
                                        "Resource": package.OWN_LOG_GROUP_ARN,
                                    }
                                ]
                            },
                        }
                    ]
                },
            },
        }
    }
    package.check_template(USER, good, "dev")
    every_group = json.loads(json.dumps(good))
    statement = every_group["Resources"]["ApiHandlerRole"]["Properties"]["Policies"][0][
        "PolicyDocument"
    ]["Statement"][0]
    statement["Resource"] = "arn:*:logs:*:*:log-group:/aws/lambda/*:*"
    with pytest.raises(package.PackageError, match="only the function's own log group"):
        package.check_template(USER, every_group, "dev")
    unnamed = json.loads(json.dumps(good))
    del unnamed["Resources"][package.FUNCTION]["Properties"]["FunctionName"]
    with pytest.raises(package.PackageError, match="FunctionName"):
        package.check_template(USER, unnamed, "dev")
    with pytest.raises(package.PackageError, match="not the packaged stage 'prod'"):
        package.check_template(USER, good, "prod")
    wrong_runtime = json.loads(json.dumps(good))
    wrong_runtime["Resources"][package.FUNCTION]["Properties"]["Runtime"] = "python3.12"
    with pytest.raises(package.PackageError, match=r"python3\.11"):
        package.check_template(USER, wrong_runtime, "dev")
    unwired = json.loads(json.dumps(good))
    unwired["Resources"][package.FUNCTION]["Properties"]["Environment"]["Variables"]["B"] = (
        package.PLACEHOLDER
    )
    with pytest.raises(package.PackageError, match="B still"):
        package.check_template(USER, unwired, "dev")


def test_resources_json_files_are_valid_fragments() -> None:
    """Every fragment merges into a template section CloudFormation knows."""
    for service in SERVICES:
        fragment = json.loads(Path(service.directory / "resources.json").read_text())
        assert set(fragment) <= {"Parameters", "Resources", "Outputs", "Conditions"}
