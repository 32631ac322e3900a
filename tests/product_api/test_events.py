"""product_api's event handlers, invoked as Lambda would (``chalice.test.Client``'s ``lambda_``):
the products table's relay, and the consumer that removes a deleted account (``UserDeleted``)."""

from __future__ import annotations

import pytest

from svckit import events
from svckit.dynamo import from_item
from tests.conftest import bearer, post_json
from tests.support import lambda_events as le
from tools import services

USERS = services.USER.stage_env("local")["TABLE_NAME"]
PRODUCTS = services.PRODUCT.stage_env("local")["TABLE_NAME"]
PROCESSED = services.PRODUCT.stage_env("local")[events.PROCESSED_TABLE_SETTING]
OLD, NEW, OTHER = "account-old", "account-new", "account-other"


@pytest.fixture
def add(product_client, issue_token):
    def _add(username: str, product_id: str, account: str | None) -> int:
        token = issue_token(username, (), account)
        body = {"product_id": product_id, "product_name": "Laptop", "price": 9.5}
        return post_json(product_client, "/add_product", body, bearer(token)).status_code

    return _add


def user_deleted(username: str, account: str | None) -> dict:
    data = {"username": username, "account_id": account}
    return le.envelope(events.USER_DELETED, data, events.USER_SOURCE)


def deliver(product_client, *envelopes) -> dict:
    records = [le.sqs_record(le.eventbridge_body(e)) for e in envelopes]
    return product_client.lambda_.invoke("on_user_events", le.sqs_event(records)).payload


def product_ids(tables) -> set[str]:
    items = tables.scan(TableName=PRODUCTS)["Items"]
    return {i["product_id"]["S"] for i in items}


def relay_twenty_refusing_the_13th(product_client) -> tuple[list[dict], dict]:
    """Twenty product inserts (p0 to p19) through the relay, the bus refusing the 13th for real
    (moto checks each entry's detail; the request is altered on its way out, after the relay
    built it): the stream records and the relay's answer."""
    records = [
        le.stream_record(
            "INSERT",
            {"product_id": f"p{n}"},
            new={
                "product_id": f"p{n}", "product_name": "x", "created_by": "ann",
                "created_at": "2026-11-22T00:00:00Z",
            },
        )
        for n in range(20)
    ]  # fmt: skip

    def spoil(params, **_):
        for entry in params["Entries"]:
            if '"product_id":"p12"' in entry["Detail"]:
                entry["Detail"] = "{not json"

    client = events.events_client()
    client.meta.events.register("before-parameter-build.events.PutEvents", spoil)
    try:
        answer = product_client.lambda_.invoke("relay_product_changes", le.stream_event(records))
    finally:
        client.meta.events.unregister("before-parameter-build.events.PutEvents", spoil)
    return records, answer.payload


def test_user_deleted_removes_that_accounts_products_and_tokens(
    product_client, add, issue_token, tables
):
    for n in range(3):
        assert add("john_doe", f"old-{n}", OLD) == 201
    assert add("mary", "marys", OTHER) == 201
    assert deliver(product_client, user_deleted("john_doe", OLD)) == {"batchItemFailures": []}
    assert product_ids(tables) == {"marys"}
    # The deleted account's tokens act for nobody; a new registration of the name is welcome.
    assert add("john_doe", "after", OLD) == 401
    assert add("john_doe", "fresh", NEW) == 201
    old_token = bearer(issue_token("john_doe", (), OLD))
    assert product_client.http.delete("/products/fresh", headers=old_token).status_code == 401
    answer = product_client.http.delete("/products/marys", headers=old_token)
    assert answer.json_body == {
        "Code": "UnauthorizedError",
        "Message": "token is invalid: its account was deleted",
    }
    assert product_ids(tables) == {"marys", "fresh"}


def test_a_later_registrations_products_survive_an_old_deletion(product_client, add, tables):
    """UserDeleted for the old account, delivered late (after the name was registered again and
    added products): only the old account's products go."""
    assert add("john_doe", "old", OLD) == 201
    assert add("john_doe", "new", NEW) == 201
    deliver(product_client, user_deleted("john_doe", OLD))
    assert product_ids(tables) == {"new"}


def test_a_redelivered_deletion_changes_nothing(product_client, add, tables):
    event = user_deleted("john_doe", OLD)
    assert add("john_doe", "old", OLD) == 201
    deliver(product_client, event)
    record = tables.get_item(TableName=PROCESSED, Key={"event_id": {"S": event["id"]}})["Item"]
    assert record["outcome"] == {"S": "applied"}
    # A product of the same name's next account, then the same event again: it stays.
    assert add("john_doe", "next", None) == 201
    assert deliver(product_client, event) == {"batchItemFailures": []}
    assert product_ids(tables) == {"next"}


def test_many_products_are_deleted_across_pages(product_client, add, tables):
    for n in range(130):  # more than one page of the by_creator index
        assert add("john_doe", f"p{n:03d}", OLD) == 201
    deliver(product_client, user_deleted("john_doe", OLD))
    assert product_ids(tables) == set()


def test_a_malformed_deletion_is_reported_and_nothing_is_deleted(product_client, add, tables):
    assert add("john_doe", "old", OLD) == 201
    bad = le.envelope(events.USER_DELETED, {"account_id": OLD}, events.USER_SOURCE)
    good = user_deleted("mary", OTHER)
    records = [le.sqs_record(le.eventbridge_body(e)) for e in (bad, good)]
    answer = product_client.lambda_.invoke("on_user_events", le.sqs_event(records)).payload
    assert le.failed_ids(answer) == [records[0]["messageId"]]
    assert product_ids(tables) == {"old"}


def test_products_added_and_deleted_are_relayed(product_client, add, tables, published):
    assert add("john_doe", "p1", OLD) == 201
    stored = from_item(tables.get_item(TableName=PRODUCTS, Key={"product_id": {"S": "p1"}})["Item"])
    ttl_gone = {**stored, "product_id": "p2"}
    records = [
        le.stream_record("INSERT", {"product_id": "p1"}, new=stored),
        le.stream_record("REMOVE", {"product_id": "p1"}, old=stored),
        le.stream_record("REMOVE", {"product_id": "p2"}, old=ttl_gone, by_ttl=True),
    ]
    answer = product_client.lambda_.invoke("relay_product_changes", le.stream_event(records))
    assert answer.payload == {"batchItemFailures": []}
    sent = published()
    assert [e["type"] for e in sent] == [events.PRODUCT_ADDED, events.PRODUCT_DELETED]
    assert sent[0]["data"] == {
        "product_id": "p1",
        "product_name": "Laptop",
        "price": 9.5,
        "created_by": "john_doe",
        "created_at": stored["created_at"],
        "created_by_account": OLD,
    }
    assert sent[1]["data"] == {
        "product_id": "p1",
        "created_by": "john_doe",
        "created_by_account": OLD,
    }
    assert all(e["source"] == events.PRODUCT_SOURCE for e in sent)
    assert len({e["id"] for e in sent}) == 2


def test_a_refused_entry_is_retried_from_its_own_record(product_client, tables, published):
    """PutEvents answers 200 with ``FailedEntryCount`` when some entries fail: the relay reports
    the first refused record's sequence number, from which Lambda retries, and the records
    before it are on the bus. The bus refuses the 13th entry for real (moto checks each entry's
    detail): the request is altered on its way out, after the relay built it."""
    records, answer = relay_twenty_refusing_the_13th(product_client)
    assert le.failed_ids(answer) == [records[12]["dynamodb"]["SequenceNumber"]]
    assert [e["data"]["product_id"] for e in published()][:12] == [f"p{n}" for n in range(12)]


def test_a_deletion_of_an_account_without_id_spares_later_registrations(
    product_client, add, tables
):
    """A user row from before account ids is deleted: only the products added without an
    account id go; a later registration's products (with an id) stay, however late the event."""
    assert add("john_doe", "legacy", None) == 201
    assert add("john_doe", "newer", NEW) == 201
    assert deliver(product_client, user_deleted("john_doe", None)) == {"batchItemFailures": []}
    assert product_ids(tables) == {"newer"}


def test_a_record_the_relay_cannot_map_is_retried_from_itself(product_client, published):
    """The records before it reach the bus; it is reported, so Lambda retries from it (and
    after the retries sends its position to the failure queue) instead of losing it."""
    good = {
        "product_id": "p1", "product_name": "x", "created_by": "ann",
        "created_at": "2026-11-22T00:00:00Z",
    }  # fmt: skip
    broken = {"product_id": "p2"}  # no name: the mapping cannot make a PRODUCT of it
    records = [
        le.stream_record("INSERT", {"product_id": "p1"}, new=good),
        le.stream_record("INSERT", {"product_id": "p2"}, new=broken),
        le.stream_record("INSERT", {"product_id": "p3"}, new={**good, "product_id": "p3"}),
    ]
    answer = product_client.lambda_.invoke("relay_product_changes", le.stream_event(records))
    assert le.failed_ids(answer.payload) == [records[1]["dynamodb"]["SequenceNumber"]]
    assert [e["data"]["product_id"] for e in published()] == ["p1"]


def test_a_deleted_legacy_users_token_is_refused_by_product_api(
    user_client, product_client, register, login, tables, published
):
    """API.md: UserDeleted -> product_api refuses that user's tokens issued before the deletion,
    also for a row from before account ids (its tokens carry no ``acct``): revoked by name."""
    assert register("old_timer").status_code == 201
    key = {"username_key": {"S": "old_timer"}}
    tables.update_item(TableName=USERS, Key=key, UpdateExpression="REMOVE account_id")
    row = from_item(tables.get_item(TableName=USERS, Key=key)["Item"])
    token = login("old_timer")
    # The user deletes themself; the relay turns the REMOVE into UserDeleted.
    assert user_client.http.delete("/users/old_timer", headers=bearer(token)).status_code == 204
    record = le.stream_record("REMOVE", {"username_key": "old_timer"}, old=row)
    user_client.lambda_.invoke("relay_user_changes", le.stream_event([record]))
    [deleted] = published()
    assert deleted["type"] == events.USER_DELETED
    assert deleted["data"]["account_id"] is None
    # product_api applies it.
    sqs = le.sqs_event([le.sqs_record(le.eventbridge_body(deleted))])
    assert product_client.lambda_.invoke("on_user_events", sqs).payload == {"batchItemFailures": []}
    # The deleted user's token still adds products.
    body = {"product_id": "after-delete", "product_name": "x"}
    answer = post_json(product_client, "/add_product", body, bearer(token))
    assert answer.status_code == 401, (answer.status_code, answer.json_body)


def test_a_deleted_legacy_users_token_does_not_credit_a_new_registration_of_the_name(
    user_client, product_client, register, login, tables, published
):
    assert register("old_timer").status_code == 201
    key = {"username_key": {"S": "old_timer"}}
    tables.update_item(TableName=USERS, Key=key, UpdateExpression="REMOVE account_id")
    token = login("old_timer")
    assert user_client.http.delete("/users/old_timer", headers=bearer(token)).status_code == 204
    assert register("old_timer").status_code == 201  # somebody else takes the name
    body = {"product_id": "p-old-token", "product_name": "x"}
    assert post_json(product_client, "/add_product", body, bearer(token)).status_code == 201
    stored = tables.get_item(
        TableName=services.PRODUCT.stage_env("local")["TABLE_NAME"],
        Key={"product_id": {"S": "p-old-token"}},
    )["Item"]
    record = le.stream_record("INSERT", {"product_id": "p-old-token"}, new=from_item(stored))
    product_client.lambda_.invoke("relay_product_changes", le.stream_event([record]))
    [added] = published()
    sqs = le.sqs_event([le.sqs_record(le.eventbridge_body(added))])
    user_client.lambda_.invoke("on_product_events", sqs)
    points = user_client.http.get("/users/old_timer").json_body["points"]
    assert points == 0, f"the new account was credited {points} points for the old token's product"


def test_large_events_are_sent_in_requests_under_eventbridges_limit(product_client, published):
    """Ten products at the contract's longest name and description, in emoji, once made one
    ~267 KB PutEvents (chunked by count alone, and the detail's emoji ASCII-escaped to 12 bytes
    each): over EventBridge's 256 KiB request limit, which holds a relay's shard for a day and
    then loses it. Every request stays under the limit by EventBridge's own size formula, and
    every event still gets onto the bus once, its text intact."""
    name, description = "\U0001f600" * 200, "\U0001f381" * 2000
    records = [
        le.stream_record(
            "INSERT",
            {"product_id": f"big{n}"},
            new={
                "product_id": f"big{n}", "product_name": name, "description": description,
                "created_by": "ann", "created_at": "2026-11-22T00:00:00Z",
            },
        )
        for n in range(10)
    ]  # fmt: skip
    sizes: list[int] = []

    def measure(params, **_):
        sizes.append(sum(events.entry_size(entry) for entry in params["Entries"]))

    client = events.events_client()
    client.meta.events.register("before-parameter-build.events.PutEvents", measure)
    try:
        answer = product_client.lambda_.invoke("relay_product_changes", le.stream_event(records))
    finally:
        client.meta.events.unregister("before-parameter-build.events.PutEvents", measure)
    assert answer.payload == {"batchItemFailures": []}
    assert sizes
    assert max(sizes) <= events.PUT_EVENTS_MAX_BYTES
    sent = published()
    assert sorted(e["data"]["product_id"] for e in sent) == [f"big{n}" for n in range(10)]
    assert {e["data"]["product_name"] for e in sent} == {name}
