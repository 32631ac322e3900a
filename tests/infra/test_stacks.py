"""What the synthesized stacks must hold, stated on ``aws_cdk.assertions.Template``, one property
per test.

The values expected come from the services' own files (``config.json``, ``tools/topology.py``)
or from the contract, never from the CDK code under test.
"""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match, Template

from infra.gateway_responses import GATEWAY_RESPONSES
from svckit import events
from tests.infra.conftest import (
    _synth,
    as_list,
    chalice_setting,
    function_id,
    functions_of,
    handler_of,
    role_id,
    statements_of,
)  # fmt: skip
from tools import topology
from tools.services import GATEWAY, PRODUCT, SERVICES, USER, ServiceDef
from tools.stages import Naming

pytestmark = pytest.mark.deploy

STAGE = "dev"
FUNCTION = "AWS::Serverless::Function"
API = "AWS::Serverless::Api"
POLICY = "AWS::IAM::Policy"
SERVICE_NAMES = [s.name for s in SERVICES]
BY_NAME = {s.name: s for s in SERVICES}
RELAYS = {r.handler: r for r in topology.RELAYS}
SUBSCRIPTIONS = {s.handler: s for s in topology.SUBSCRIPTIONS}


XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
# Lambda asks a queue's visibility timeout to be at least six times its consumer's timeout, so a
# message is not handed to a second poller while the first one still works on it.
VISIBILITY_TIMEOUT_FACTOR = 6


def stack_name(service: ServiceDef) -> str:
    return Naming(STAGE).stack(service)


ALL_FUNCTIONS = [
    (service.name, logical_id) for service in SERVICES for logical_id in functions_of(service)
]


def test_stacks_keep_todays_names(stage) -> None:
    names = {stack.stack_name for stack in stage.stacks}
    assert names == {
        Naming(STAGE).events_stack,
        *(stack_name(service) for service in SERVICES),
        Naming(STAGE).observability_stack,
    }


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_service_stack_has_the_sam_transform(templates, name) -> None:
    assert templates[name].to_json()["Transform"] == "AWS::Serverless-2016-10-31"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_function_runs_python311(templates, name) -> None:
    templates[name].all_resources_properties(FUNCTION, {"Runtime": "python3.11"})


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_function_is_traced(templates, name) -> None:
    templates[name].all_resources_properties(FUNCTION, {"Tracing": "Active"})


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_function_gets_the_stage_being_deployed(templates, name) -> None:
    templates[name].all_resources_properties(
        FUNCTION, {"Environment": {"Variables": Match.object_like({"STAGE": STAGE})}}
    )


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_function_runs_the_zip_asset(templates, name) -> None:
    templates[name].all_resources_properties(
        FUNCTION,
        {"CodeUri": {"Bucket": Match.any_value(), "Key": Match.string_like_regexp(r"^\w+\.zip$")}},
    )


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_only_the_topologys_functions(templates, name) -> None:
    found = templates[name].find_resources(FUNCTION)
    assert set(found) == set(functions_of(BY_NAME[name]))


@pytest.mark.parametrize(("name", "logical_id"), ALL_FUNCTIONS)
def test_function_is_named_after_its_stack(templates, name, logical_id) -> None:
    expected = stack_name(BY_NAME[name]) + functions_of(BY_NAME[name])[logical_id]
    named = templates[name].find_resources(FUNCTION, {"Properties": {"FunctionName": expected}})
    assert set(named) == {logical_id}


@pytest.mark.parametrize(("name", "logical_id"), ALL_FUNCTIONS)
def test_function_has_its_own_log_group(templates, name, logical_id) -> None:
    templates[name].has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{logical_id}}}"},
                "RetentionInDays": 14,
            },
            "DeletionPolicy": "Delete",
        },
    )


@pytest.mark.parametrize(("name", "logical_id"), ALL_FUNCTIONS)
def test_function_role_may_send_traces(templates, name, logical_id) -> None:
    tracing = templates[name].find_resources(
        POLICY,
        {
            "Properties": {
                "Roles": [{"Ref": role_id(logical_id)}],
                "PolicyDocument": {
                    "Statement": [
                        Match.object_like(
                            {"Action": XRAY_ACTIONS, "Effect": "Allow", "Resource": "*"}
                        )
                    ]
                },
            }
        },
    )
    assert len(tracing) == 1


@pytest.mark.parametrize(("name", "logical_id"), ALL_FUNCTIONS)
def test_function_reserved_concurrency_is_configs(templates, name, logical_id) -> None:
    service = BY_NAME[name]
    wanted = chalice_setting(service, handler_of(logical_id), "reserved_concurrency")
    assert wanted is not None
    named = stack_name(service) + functions_of(service)[logical_id]
    templates[name].has_resource_properties(
        FUNCTION, {"FunctionName": named, "ReservedConcurrentExecutions": wanted}
    )


@pytest.mark.parametrize("handler", [*RELAYS, *SUBSCRIPTIONS])
def test_event_function_runs_as_a_role_of_its_own(templates, handler) -> None:
    service = (RELAYS.get(handler) or SUBSCRIPTIONS[handler]).service
    templates[service.name].has_resource_properties(
        FUNCTION,
        {
            "FunctionName": stack_name(service) + functions_of(service)[function_id(handler)],
            "Role": {"Fn::GetAtt": [role_id(function_id(handler)), "Arn"]},
        },
    )


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_no_placeholder_is_left(templates, name) -> None:
    text = json.dumps(templates[name].to_json())
    for placeholder in (
        "set-by-deploy",
        events.STREAM_ARN_PLACEHOLDER,
        events.QUEUE_ARN_PLACEHOLDER,
    ):
        assert placeholder not in text


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_api_is_traced(templates, name) -> None:
    templates[name].has_resource_properties(API, {"TracingEnabled": True})


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_api_is_named_after_its_stack(templates, name) -> None:
    api_name = stack_name(BY_NAME[name])
    templates[name].has_resource_properties(
        API,
        {"Name": api_name, "DefinitionBody": Match.object_like({"info": Match.object_like(
            {"title": api_name})})},
    )  # fmt: skip


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_api_is_throttled(templates, name) -> None:
    templates[name].has_resource_properties(
        API,
        {"MethodSettings": [Match.object_like(
            {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100})]},
    )  # fmt: skip


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_unknown_route_is_the_contracts_404(templates, name) -> None:
    templates[name].has_resource_properties(
        API,
        {"DefinitionBody": Match.object_like({"x-amazon-apigateway-gateway-responses":
            Match.object_like({"MISSING_AUTHENTICATION_TOKEN": {
                "statusCode": "404",
                "responseParameters": {
                    "gatewayresponse.header.X-Request-Id": "context.requestId"},
                "responseTemplates": {"application/json": Match.string_like_regexp(
                    r'^\{"Code": "NotFoundError", "Message": ".+"\}$')},
            }})})},
    )  # fmt: skip


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_gateway_response_is_in_the_error_shape(templates, name) -> None:
    message = r'(".*"|\$context\.error\.messageString)'
    shape = re.compile(r'^\{"Code": "[A-Za-z]+Error", "Message": ' + message + r"\}$")
    responses = {
        code: {"responseTemplates": {"application/json": Match.string_like_regexp(shape.pattern)},
               "responseParameters": {"gatewayresponse.header.X-Request-Id": "context.requestId"}}
        for code in GATEWAY_RESPONSES
    }  # fmt: skip
    templates[name].has_resource_properties(
        API,
        {"DefinitionBody": Match.object_like({"x-amazon-apigateway-gateway-responses":
            Match.object_like({c: Match.object_like(r) for c, r in responses.items()})})},
    )  # fmt: skip


@pytest.mark.parametrize("handler", list(SUBSCRIPTIONS))
def test_queue_visibility_is_six_times_its_consumers_timeout(templates, handler) -> None:
    sub = SUBSCRIPTIONS[handler]
    template = templates[sub.service.name]
    function = template.find_resources(FUNCTION)[function_id(handler)]
    queue = template.find_resources("AWS::SQS::Queue")[sub.queue]
    timeout = function["Properties"]["Timeout"]
    assert queue["Properties"]["VisibilityTimeout"] >= VISIBILITY_TIMEOUT_FACTOR * timeout


@pytest.mark.parametrize("handler", list(RELAYS))
def test_relay_publishes_only_its_own_source_on_the_bus(templates, handler) -> None:
    relay = RELAYS[handler]
    templates[relay.service.name].has_resource_properties(
        POLICY,
        {
            "Roles": [{"Ref": role_id(function_id(handler))}],
            "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
                "Action": "events:PutEvents",
                "Resource": {"Fn::ImportValue": Match.string_like_regexp("^shop-dev-events:")},
                "Condition": {"StringEquals": {"events:source": relay.source}},
            })])},
        },
    )  # fmt: skip


@pytest.mark.parametrize("handler", list(RELAYS))
def test_relay_reads_its_tables_stream_from_the_oldest_record(templates, handler) -> None:
    relay = RELAYS[handler]
    templates[relay.service.name].has_resource_properties(
        FUNCTION,
        {"Events": {function_id(f"{handler}-dynamodb-event-source"): {
            "Type": "DynamoDB",
            "Properties": Match.object_like({
                "Stream": {"Fn::GetAtt": [relay.table, "StreamArn"]},
                "StartingPosition": "TRIM_HORIZON",
                "DestinationConfig": {"OnFailure": {
                    "Type": "SQS", "Destination": {"Fn::GetAtt": [relay.failure_queue, "Arn"]}}},
            }),
        }}},
    )  # fmt: skip


@pytest.mark.parametrize("handler", list(SUBSCRIPTIONS))
def test_consumer_drains_its_own_queue_within_its_concurrency(templates, handler) -> None:
    sub = SUBSCRIPTIONS[handler]
    reserved = chalice_setting(sub.service, handler, "reserved_concurrency")
    templates[sub.service.name].has_resource_properties(
        FUNCTION,
        {"Events": {function_id(f"{handler}-sqs-event-source"): {
            "Type": "SQS",
            "Properties": Match.object_like({
                "Queue": {"Fn::GetAtt": [sub.queue, "Arn"]},
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": reserved},
            }),
        }}},
    )  # fmt: skip


@pytest.mark.parametrize("handler", list(SUBSCRIPTIONS))
def test_rule_dead_letters_into_the_consumers_dlq(templates, handler) -> None:
    sub = SUBSCRIPTIONS[handler]
    templates[sub.service.name].has_resource_properties(
        "AWS::Events::Rule",
        {
            "Name": sub.rule_name(STAGE),
            "EventPattern": sub.event_pattern(),
            "EventBusName": {"Fn::ImportValue": Match.string_like_regexp("^shop-dev-events:")},
            "Targets": [Match.object_like({
                "Arn": {"Fn::GetAtt": [sub.queue, "Arn"]},
                "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [sub.dead_letter_queue, "Arn"]}},
                "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400},
            })],
        },
    )  # fmt: skip


@pytest.mark.parametrize(("handler", "queue"), [
    (h, q) for h, s in SUBSCRIPTIONS.items() for q in (s.queue, s.dead_letter_queue)])  # fmt: skip
def test_only_the_consumers_rule_may_send_to_its_queues(templates, handler, queue) -> None:
    sub = SUBSCRIPTIONS[handler]
    allowed = templates[sub.service.name].find_resources(
        "AWS::SQS::QueuePolicy",
        {"Properties": {"Queues": [{"Ref": queue}], "PolicyDocument": {"Statement": [
            Match.object_like({"Effect": "Deny"}),  # plain HTTP (enforce_ssl)
            Match.object_like({
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": {"Fn::GetAtt": [queue, "Arn"]},
                "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [sub.rule, "Arn"]}}},
            }),
        ]}}},
    )  # fmt: skip
    assert set(allowed) == {f"{queue}Policy"}


@pytest.mark.parametrize("name", [USER.name, PRODUCT.name])
def test_functions_get_the_bus_from_the_events_stack(templates, name) -> None:
    templates[name].all_resources_properties(
        FUNCTION,
        {"Environment": {"Variables": Match.object_like({events.BUS_SETTING: {
            "Fn::ImportValue": Match.string_like_regexp("^shop-dev-events:")}})}},
    )  # fmt: skip


@pytest.mark.parametrize("upstream", [USER, PRODUCT])
def test_gateway_reaches_a_service_by_its_rest_api_id(templates, upstream) -> None:
    assert upstream.url_env is not None
    templates[GATEWAY.name].has_resource_properties(
        FUNCTION,
        {"Environment": {"Variables": Match.object_like({upstream.url_env: {"Fn::Sub": [
            "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/",
            {"Api": {"Fn::ImportValue": Match.string_like_regexp(
                f"^{stack_name(upstream)}:.*RestAPI")}},
        ]}})}},
    )  # fmt: skip


@pytest.mark.parametrize("upstream", [USER, PRODUCT])
def test_gateway_on_localstack_uses_the_path_form(localstack_stage, upstream) -> None:
    assert upstream.url_env is not None
    Template.from_stack(localstack_stage.services[GATEWAY.name]).has_resource_properties(
        FUNCTION,
        {"Environment": {"Variables": Match.object_like({upstream.url_env: {"Fn::Join": ["", [
            "http://127.0.0.1:4566/_aws/execute-api/",
            {"Fn::ImportValue": Match.string_like_regexp(f"^{stack_name(upstream)}:")},
            "/api/",
        ]]}})}},
    )  # fmt: skip


def test_archive_keeps_every_services_events(templates) -> None:
    templates["events"].has_resource_properties(
        "AWS::Events::Archive",
        {
            "ArchiveName": f"{topology.bus_name(STAGE)}-archive",
            "RetentionDays": topology.ARCHIVE_RETENTION_DAYS,
            "EventPattern": {"source": sorted({r.source for r in topology.RELAYS})},
        },
    )


# AWS's name limits, met by the names of the longest stage a stage name may be (16 characters).
NAME_LIMITS = [(FUNCTION, "FunctionName", 64), ("AWS::SQS::Queue", "QueueName", 80),
               ("AWS::Events::Rule", "Name", 64)]  # fmt: skip
LONGEST_STAGE = 16


@pytest.mark.parametrize(("name", "logical_id"), ALL_FUNCTIONS)
def test_function_role_writes_logs_only_to_its_own_log_group(templates, name, logical_id) -> None:
    """Not every Lambda's group (``/aws/lambda/*``), nor another function's of the service."""
    template = templates[name]
    function = template.find_resources(FUNCTION)[logical_id]["Properties"]["FunctionName"]
    logs = [(sorted(as_list(s["Action"])), s["Resource"]["Fn::Sub"])
            for s in statements_of(template, role_id(logical_id))
            if any(a.startswith("logs:") for a in as_list(s["Action"]))]  # fmt: skip
    arn = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/"
    assert [(a, r.replace("${AWS::StackName}", stack_name(BY_NAME[name]))) for a, r in logs] == [
        (["logs:CreateLogStream", "logs:PutLogEvents"], f"{arn}{function}:*")
    ]


def test_only_user_apis_api_function_can_read_the_signing_key(templates) -> None:
    readers = [
        (name, role, s["Action"], s["Resource"])
        for name in SERVICE_NAMES
        for role in templates[name].find_resources("AWS::IAM::Role")
        for s in statements_of(templates[name], role)
        if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))
    ]
    key = {"Ref": "SigningKeySecretArn"}
    assert readers == [(USER.name, "ApiHandlerRole", "secretsmanager:GetSecretValue", key)]


@pytest.mark.parametrize(("name", "logical_id"), [f for f in ALL_FUNCTIONS if f[1] != "APIHandler"])
def test_event_function_gets_the_api_functions_environment(templates, name, logical_id) -> None:
    """Chalice gives every function the stage's variables, ``set-by-deploy`` ones included;
    the stack wires them once, so an event function reads the same tables, bus and settings."""
    functions = templates[name].find_resources(FUNCTION)
    environment = {k: f["Properties"]["Environment"] for k, f in functions.items()}
    assert environment[logical_id] == environment["APIHandler"]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_jwks_comes_from_the_stages_ssm_parameter(templates, name) -> None:
    """By dynamic reference: CloudFormation resolves it at deploy, no function calls SSM."""
    jwks = {"JWT_JWKS": f"{{{{resolve:ssm:/shop/{STAGE}/jwt-jwks}}}}"}
    templates[name].all_resources_properties(
        FUNCTION, {"Environment": {"Variables": Match.object_like(jwks)}})  # fmt: skip


def test_the_deploys_jwks_version_is_the_one_every_function_references(
    packaged_apps, tmp_path
) -> None:
    """A rotation makes a new SSM version: the deploy passes it, so the templates change and
    the stacks update (an unchanged JWKS keeps them as they are)."""
    built = _synth(packaged_apps, tmp_path, jwksVersion="7")
    for stack in built.services.values():
        template = Template.from_stack(stack)
        jwks = {"JWT_JWKS": f"{{{{resolve:ssm:/shop/{STAGE}/jwt-jwks:7}}}}"}
        template.all_resources_properties(
            FUNCTION, {"Environment": {"Variables": Match.object_like(jwks)}})  # fmt: skip


@pytest.mark.parametrize(("kind", "key", "limit"), NAME_LIMITS)
def test_names_fit_aws_limits_at_the_longest_stage(templates, kind, key, limit) -> None:
    names = [r["Properties"][key] for name in SERVICE_NAMES
             for r in templates[name].find_resources(kind).values()]  # fmt: skip
    assert names
    assert all(n.startswith(f"shop-{STAGE}-") for n in names), names
    longest = {n: len(n) - len(STAGE) + LONGEST_STAGE for n in names}
    assert {n: size for n, size in longest.items() if size > limit} == {}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_route_goes_to_the_one_function_without_an_authorizer(templates, name) -> None:
    """Tokens are verified in the app (svckit), whose 401 has the contract's shape; an API
    Gateway authorizer would answer with its own body."""
    body = templates[name].to_json()["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    operations = [(p, m, op) for p, item in body["paths"].items() for m, op in item.items()]
    assert len(operations) >= 3
    assert "securityDefinitions" not in body
    targets = {(p, m): (op.get("security"), op["x-amazon-apigateway-integration"]["type"],
                        op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"])
               for p, m, op in operations}  # fmt: skip
    invoke = "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
    one = (None, "aws_proxy", invoke + "${APIHandler.Arn}/invocations")
    assert {route: t for route, t in targets.items() if t != one} == {}


def test_every_subscription_listens_to_a_source_some_relay_publishes() -> None:
    published = {relay.source for relay in topology.RELAYS}
    assert {sub.source: sub.source in published for sub in topology.SUBSCRIPTIONS} == {
        sub.source: True for sub in topology.SUBSCRIPTIONS
    }
