"""Each consumer function's role allows exactly the DynamoDB calls its code makes: derived from
the code running (every outcome: applied, duplicate, nothing to apply), never listed by hand.

The calls are recorded from the handler invoked as Lambda would (``lambda_.invoke`` on moto);
the grants are read from the merge template ``tools.package`` gives ``chalice package`` for a
deployed stage (the service's ``resources.json`` and ``tools.eventstack``'s fragment). A grant
the code never uses is a permission an attacker with the function's role would have for
nothing; a call without a grant fails only on AWS. TransactWriteItems is authorised per inner
action (a Put is PutItem), which is how both sides are counted.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from svckit import events
from tests.conftest import bearer, post_json
from tests.support import lambda_events as le
from tools import eventstack, package, services
from tools.services import ServiceDef

pytestmark = pytest.mark.deploy

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
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = resource["Fn::Sub"]
        if text.startswith("${") and ".Arn}/index/" in text:
            return text[2 : text.index(".Arn}")] + "/index"
    return None


def granted(service: ServiceDef, handler: str) -> Grants:
    role = eventstack.role_id(handler)
    fragment = package.merge_fragment(service, "dev")
    grants: Grants = defaultdict(set)
    for resource in fragment["Resources"].values():
        if resource.get("Type") != "AWS::IAM::Policy":
            continue
        if {"Ref": role} not in resource["Properties"]["Roles"]:
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            actions = actions if isinstance(actions, list) else [actions]
            target = _resource_id(statement["Resource"])
            for action in actions:
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
        target = by_name[params["TableName"]]
        found[target + "/index" if params.get("IndexName") else target].add(operation)
    return dict(found)


def test_on_product_events_is_granted_what_it_calls(user_client, register, tables, dynamo_calls):
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
    assert used(services.USER, dynamo_calls) == granted(services.USER, "on_product_events")


def test_on_user_events_is_granted_what_it_calls(product_client, issue_token, dynamo_calls):
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
    assert used(services.PRODUCT, dynamo_calls) == granted(services.PRODUCT, "on_user_events")
