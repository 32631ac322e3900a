"""Least privilege, kept exactly: each consumer's role (in the synthesized stack) allows the
DynamoDB calls its code makes and nothing else, and no statement anywhere is as wide as CDK's
grant helpers would make it.

The calls are recorded from the handler invoked as Lambda would (``lambda_.invoke`` on moto,
every outcome: applied, duplicate, nothing to apply), never listed by hand; the grants are read
from the stack's policies. TransactWriteItems is authorised per inner action (a Put is PutItem).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from aws_cdk.assertions import Template

from svckit import events
from tests.conftest import bearer, post_json
from tests.infra.conftest import as_list, function_id, functions_of, role_id, statements_of
from tests.support import lambda_events as le
from tools import services
from tools.services import SERVICES, ServiceDef

pytestmark = pytest.mark.deploy

BY_NAME = {s.name: s for s in SERVICES}

INNER_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
Grants = dict[str, set[str]]  # a table's logical id (or "<id>/index") -> dynamodb actions


def _resource_id(resource: Any) -> str | None:
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        return logical_id if attribute == "Arn" else None  # a stream ARN is not a table
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        text = resource["Fn::Sub"]
        if text.startswith("${") and ".Arn}/index/" in text:
            return text[2 : text.index(".Arn}")] + "/index"
    return None


def granted(template: Template, handler: str) -> Grants:
    """The DynamoDB grants of ``handler``'s role (``api_handler``: the API function's)."""
    grants: Grants = defaultdict(set)
    for statement in statements_of(template, role_id(function_id(handler))):
        target = _resource_id(statement["Resource"])
        for action in as_list(statement["Action"]):
            if action.startswith("dynamodb:") and target is not None:
                grants[target].add(action.removeprefix("dynamodb:"))
    return dict(grants)


def used(service: ServiceDef, calls: list[tuple[str, dict[str, Any]]]) -> Grants:
    by_name = {
        service.stage_env("local")[service.table_env(logical_id)]: logical_id
        for logical_id in service.tables()
    }
    found: Grants = defaultdict(set)
    for operation, params in calls:
        if operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                found[by_name[body["TableName"]]].add(INNER_ACTIONS[kind])
            continue
        if operation == "BatchGetItem":
            for table in params["RequestItems"]:
                found[by_name[table]].add(operation)
            continue
        target = by_name[params["TableName"]]
        found[target + "/index" if params.get("IndexName") else target].add(operation)
    return dict(found)


def test_on_product_events_is_granted_what_it_calls(
    templates, user_client, register, tables, dynamo_calls
) -> None:
    assert register("john_doe").status_code == 201
    row = tables.get_item(
        TableName=services.USER.stage_env("local")["TABLE_NAME"],
        Key={"username_key": {"S": "john_doe"}},
    )["Item"]
    data = {"product_id": "p", "product_name": "x", "created_by": "john_doe"}
    added = le.envelope(
        events.PRODUCT_ADDED,
        {**data, "created_by_account": row["account_id"]["S"]},
        events.PRODUCT_SOURCE,
    )
    gone = le.envelope(
        events.PRODUCT_ADDED, {**data, "created_by_account": "other"}, events.PRODUCT_SOURCE
    )
    dynamo_calls.clear()
    records = [le.sqs_record(le.eventbridge_body(e)) for e in (added, added, gone, gone)]
    answer = user_client.lambda_.invoke("on_product_events", le.sqs_event(records)).payload
    assert answer == {"batchItemFailures": []}
    assert used(services.USER, dynamo_calls) == granted(
        templates[services.USER.name], "on_product_events"
    )


def test_on_user_events_is_granted_what_it_calls(
    templates, product_client, issue_token, dynamo_calls
) -> None:
    token = issue_token("john_doe", (), "acct-1")
    body = {"product_id": "p1", "product_name": "x"}
    assert post_json(product_client, "/add_product", body, bearer(token)).status_code == 201
    deleted = le.envelope(
        events.USER_DELETED, {"username": "john_doe", "account_id": "acct-1"}, events.USER_SOURCE
    )
    dynamo_calls.clear()
    records = [le.sqs_record(le.eventbridge_body(deleted))] * 2  # and its duplicate
    answer = product_client.lambda_.invoke("on_user_events", le.sqs_event(records)).payload
    assert answer == {"batchItemFailures": []}
    assert used(services.PRODUCT, dynamo_calls) == granted(
        templates[services.PRODUCT.name], "on_user_events"
    )


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_only_xray_is_granted_on_every_resource(templates, name) -> None:
    """X-Ray takes no resource but ``*``; nothing else may be granted on it."""
    template = templates[name]
    for role in template.find_resources("AWS::IAM::Role"):
        for statement in statements_of(template, role):
            if statement["Resource"] == "*":
                assert as_list(statement["Action"]) == [
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                ], role


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_no_grant_is_as_wide_as_cdks_helpers(templates, name) -> None:
    """Not ``index/*`` (grantReadData), not the queue lookups of grantSendMessages, no
    wildcard action."""
    template = templates[name]
    for role in template.find_resources("AWS::IAM::Role"):
        for statement in statements_of(template, role):
            actions = as_list(statement["Action"])
            assert not {"sqs:GetQueueUrl", "dynamodb:*", "sqs:*", "events:*"} & set(actions)
            assert "index/*" not in json.dumps(statement["Resource"]), role


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_every_function_has_a_role_of_its_own(templates, name) -> None:
    functions = templates[name].find_resources("AWS::Serverless::Function").values()
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions]
    assert len(set(roles)) == len(roles) == len(functions_of(BY_NAME[name]))


# What a role may hold that no walk of the routes calls, and why: Powertools reads an idempotency
# record with GetItem only when a failed conditional write did not return it (DynamoDB and moto
# always do); without the grant that fallback would be a 500.
UNCALLED_FALLBACKS: Grants = {"IdempotencyTable": {"GetItem"}}


def assert_granted_exactly(template: Template, calls: Grants) -> None:
    grants = granted(template, "api_handler")
    for target in UNCALLED_FALLBACKS.keys() & grants.keys():
        calls = {**calls, target: calls.get(target, set()) | UNCALLED_FALLBACKS[target]}
    assert calls == grants


def test_user_apis_role_is_granted_what_its_routes_call(
    templates, user_client, register, login, admin_token, dynamo_calls
) -> None:
    """Every route of user_api, keyed and not, succeeding and failing, through the app."""
    keyed = {"Idempotency-Key": "grants-1"}
    ann = {"username": "ann", "password": "correct-horse-1234"}
    assert post_json(user_client, "/register", ann, keyed).status_code == 201
    assert post_json(user_client, "/register", ann, keyed).status_code == 201  # the replay
    invalid = post_json(user_client, "/register", {"username": "x"}, {"Idempotency-Key": "bad"})
    assert invalid.status_code == 400  # the record made, then deleted
    wrong = {"username": "ann", "password": "wrong-password-1"}
    assert post_json(user_client, "/login", wrong).status_code == 401  # the failure counters
    token = login("ann", "correct-horse-1234")
    for path in ("/users", "/users/ann", "/health?ready=1"):
        assert user_client.http.get(path, headers=bearer(token)).status_code == 200, path
    assert user_client.http.put("/user/promote/ann", headers=bearer(token)).status_code == 200
    grant = post_json(user_client, "/users/ann/points", {"points": 5}, bearer(admin_token))
    assert grant.status_code == 200
    assert user_client.http.delete("/users/ann", headers=bearer(token)).status_code == 204
    assert_granted_exactly(templates[services.USER.name], used(services.USER, dynamo_calls))


def test_product_apis_role_is_granted_what_its_routes_call(
    templates, product_client, issue_token, dynamo_calls
) -> None:
    token = bearer(issue_token("ann", (), "acct-ann"))
    keyed = {**token, "Idempotency-Key": "grants-2"}
    body = {"product_id": "p1", "product_name": "x"}
    assert post_json(product_client, "/add_product", body, keyed).status_code == 201
    assert post_json(product_client, "/add_product", body, keyed).status_code == 201
    bad = {**token, "Idempotency-Key": "bad"}  # the record made, then deleted
    assert post_json(product_client, "/products", {"product_name": ""}, bad).status_code == 400
    assert post_json(product_client, "/products", {"product_name": "y"}, token).status_code == 201
    for path in ("/get_products", "/products?created_by=ann", "/products/p1", "/health?ready=1"):
        assert product_client.http.get(path).status_code == 200, path
    assert product_client.http.delete("/products/p1", headers=token).status_code == 204
    assert_granted_exactly(templates[services.PRODUCT.name], used(services.PRODUCT, dynamo_calls))
