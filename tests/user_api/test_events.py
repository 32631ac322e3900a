"""user_api's event handlers, invoked as Lambda would (``chalice.test.Client``'s ``lambda_``):
the users table's relay, and the consumer that grants points for ``ProductAdded``."""

from __future__ import annotations

from typing import Any

import pytest

from svckit import events
from tests.conftest import bearer
from tests.support import lambda_events as le
from tools import services

USERS = services.USER.stage_env("local")["TABLE_NAME"]
PROCESSED = services.USER.stage_env("local")[events.PROCESSED_TABLE_SETTING]


def product_added(creator: str, account: str | None, product_id: str = "p1", **kw: Any) -> dict:
    data = {"product_id": product_id, "product_name": "Laptop", "created_by": creator}
    data["created_by_account"] = account
    return le.envelope(events.PRODUCT_ADDED, data, events.PRODUCT_SOURCE, **kw)


def deliver(user_client, *envelopes_or_bodies) -> dict:
    records = [
        le.sqs_record(x if isinstance(x, str) else le.eventbridge_body(x))
        for x in envelopes_or_bodies
    ]
    answer = user_client.lambda_.invoke("on_product_events", le.sqs_event(records)).payload
    answer["ids"] = [r["messageId"] for r in records]
    return answer


def row(tables, username: str) -> dict:
    return tables.get_item(TableName=USERS, Key={"username_key": {"S": username.lower()}})["Item"]


def points(user_client, username: str) -> int:
    return user_client.http.get(f"/users/{username}").json_body["points"]


@pytest.fixture
def john(register, tables) -> str:
    """john_doe's account id, as his tokens carry it."""
    assert register("john_doe", email="john@example.com").status_code == 201
    return row(tables, "john_doe")["account_id"]["S"]


def test_product_added_grants_the_stage_points_once_per_event(user_client, john):
    first = product_added("john_doe", john)
    answer = deliver(user_client, first, product_added("john_doe", john, "p2"))
    assert answer["batchItemFailures"] == []
    assert points(user_client, "john_doe") == 20  # POINTS_PER_PRODUCT is 10 in config.json
    # The same event again, alone and twice in one batch: nothing more.
    assert deliver(user_client, first, first)["batchItemFailures"] == []
    assert points(user_client, "john_doe") == 20


def test_the_event_and_the_points_are_one_write(user_client, john, tables):
    event = product_added("john_doe", john)
    deliver(user_client, event)
    record = tables.get_item(TableName=PROCESSED, Key={"event_id": {"S": event["id"]}})["Item"]
    assert record["outcome"] == {"S": "applied"}
    assert int(record["expires_at"]["N"]) - int(record["processed_at"]["N"]) == (
        events.PROCESSED_RETENTION_SECONDS
    )


def test_points_for_a_deleted_or_reregistered_account_go_nowhere(
    user_client, john, register, login, tables
):
    token = login("john_doe")
    assert user_client.http.delete("/users/john_doe", headers=bearer(token)).status_code == 204
    gone = product_added("john_doe", john)
    assert deliver(user_client, gone)["batchItemFailures"] == []  # nothing to retry
    assert register("john_doe").status_code == 201  # a new account under the same name
    assert deliver(user_client, product_added("john_doe", john, "p2"))["batchItemFailures"] == []
    assert points(user_client, "john_doe") == 0
    skipped = tables.get_item(TableName=PROCESSED, Key={"event_id": {"S": gone["id"]}})["Item"]
    assert skipped["outcome"] == {"S": "skipped"}


def test_an_event_without_an_account_credits_only_a_row_without_one(user_client, john, tables):
    """A product added with a token from before account ids: its creator is a registration
    from before account ids too. A row that has one (john's, or a later registration of a
    legacy name) gets nothing; a legacy row gets the points."""
    deliver(user_client, product_added("JOHN_DOE", None))
    assert points(user_client, "john_doe") == 0
    key = {"username_key": {"S": "john_doe"}}
    tables.update_item(TableName=USERS, Key=key, UpdateExpression="REMOVE account_id")
    deliver(user_client, product_added("JOHN_DOE", None, "p2"))
    assert points(user_client, "john_doe") == 10


def test_one_bad_message_in_a_batch_is_the_only_one_reported(user_client, john):
    good = product_added("john_doe", john)
    no_creator = le.envelope(events.PRODUCT_ADDED, {"product_id": "x"}, events.PRODUCT_SOURCE)
    newer = {**product_added("john_doe", john, "p2"), "version": 2}
    answer = deliver(user_client, good, "not json at all", no_creator, newer)
    assert le.failed_ids(answer) == answer["ids"][1:]
    assert points(user_client, "john_doe") == 10


def test_an_unsubscribed_type_is_dropped_not_retried(user_client, john):
    other = le.envelope(events.PRODUCT_DELETED, {"product_id": "p1"}, events.PRODUCT_SOURCE)
    assert deliver(user_client, other)["batchItemFailures"] == []
    assert points(user_client, "john_doe") == 0


def test_registration_and_deletion_are_relayed_without_secrets(
    user_client, john, tables, published
):
    registered = row(tables, "john_doe")
    updated = {**registered, "points": {"N": "10"}}
    from svckit.dynamo import from_item

    records = [
        le.stream_record("INSERT", {"username_key": "john_doe"}, new=from_item(registered)),
        le.stream_record(
            "MODIFY", {"username_key": "john_doe"}, new=from_item(updated),
            old=from_item(registered),
        ),
        le.stream_record("REMOVE", {"username_key": "john_doe"}, old=from_item(updated)),
    ]  # fmt: skip
    answer = user_client.lambda_.invoke("relay_user_changes", le.stream_event(records)).payload
    assert answer == {"batchItemFailures": []}
    sent = published()
    assert [e["type"] for e in sent] == [events.USER_REGISTERED, events.USER_DELETED]
    assert sent[0]["data"] == {
        "username": "john_doe",
        "account_id": john,
        "created_at": registered["created_at"]["S"],
    }
    assert sent[1]["data"] == {"username": "john_doe", "account_id": john}
    for event in sent:
        assert event["source"] == events.USER_SOURCE
        assert event["version"] == 1
        assert "password" not in str(event)
        assert "argon2" not in str(event)
        assert "example.com" not in str(event)
    # The same record relayed again is the same event.
    user_client.lambda_.invoke("relay_user_changes", le.stream_event(records[:1]))
    assert published()[0]["id"] == sent[0]["id"]


CONFLICT = {
    "Error": {"Code": "TransactionConflictException", "Message": "Transaction is ongoing"},
    "ResponseMetadata": {"HTTPStatusCode": 400},
}


@pytest.mark.parametrize("operation", ["update_item", "delete_item"])
def test_a_write_meeting_a_points_transaction_is_busy_not_a_500(
    user_client, john, login, monkeypatch, operation
):
    """DynamoDB refuses a plain write to an item a transaction holds at that moment (a consumer
    granting points) with TransactionConflictException, which botocore does not retry: the
    contract's 429 "retry shortly", never a 500. DynamoDB Local never conflicts, so the one
    refusal is put in front of moto's real call."""
    from botocore.exceptions import ClientError

    from svckit import dynamo

    token = login("john_doe")
    client = dynamo.client()
    real = getattr(client, operation)

    def conflicting(**kwargs):
        if kwargs.get("TableName") == USERS:
            raise ClientError(CONFLICT, operation)
        return real(**kwargs)

    monkeypatch.setattr(client, operation, conflicting)
    if operation == "update_item":
        answer = user_client.http.put("/user/promote/john_doe", headers=bearer(token))
    else:
        answer = user_client.http.delete("/users/john_doe", headers=bearer(token))
    assert answer.status_code == 429, answer.body
    assert answer.json_body["Code"] == "TooManyRequestsError"


def test_a_points_transaction_in_conflict_is_tried_again_in_place(user_client, john, monkeypatch):
    """Consumers running in parallel for one busy user conflict; the consumer tries again a
    few times (with jitter) before sending the message back to its queue."""
    from botocore.exceptions import ClientError

    from svckit import dynamo

    client = dynamo.client()
    real = client.transact_write_items
    refusals = {"left": 2}

    def conflicting_twice(**kwargs):
        if refusals["left"]:
            refusals["left"] -= 1
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}]
            response = {
                "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                "CancellationReasons": reasons,
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            raise ClientError(response, "TransactWriteItems")
        return real(**kwargs)

    monkeypatch.setattr(client, "transact_write_items", conflicting_twice)
    assert deliver(user_client, product_added("john_doe", john))["batchItemFailures"] == []
    assert refusals["left"] == 0
    assert points(user_client, "john_doe") == 10
    refusals["left"] = events.CONFLICT_ATTEMPTS  # every try refused: back to the queue
    answer = deliver(user_client, product_added("john_doe", john, "p2"))
    assert le.failed_ids(answer) == answer["ids"]
    assert points(user_client, "john_doe") == 10


def test_an_event_time_without_a_zone_fails_only_its_own_message(user_client, john):
    """A valid ISO time with no zone once passed the envelope's check and then broke the lag's
    arithmetic after the handler, outside the per-message failure: the whole batch failed, the
    messages after it were never tried, and good ones sharing its batches were dead-lettered."""
    good = product_added("john_doe", john)
    unzoned = {**product_added("john_doe", john, "p2"), "time": "2026-11-22T01:00:00"}
    after = product_added("john_doe", john, "p3")
    answer = deliver(user_client, good, unzoned, after)
    assert le.failed_ids(answer) == [answer["ids"][1]]
    assert points(user_client, "john_doe") == 20
