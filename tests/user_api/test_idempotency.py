"""Idempotency-Key on user_api's write routes: registration (scoped by the caller's source, as it
has no token), promotion and deletion. The mechanism and its edge cases are tested on
product_api (tests/product_api/test_idempotency.py); these are user_api's own routes."""

from __future__ import annotations

import uuid

from svckit import idempotency
from tests.conftest import bearer, post_json
from tools import services

USERS = services.USER.stage_env("local")["TABLE_NAME"]
ALICE = {"username": "alice", "password": "correct-horse-1234"}


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {idempotency.HEADER: key, **headers}


def test_a_repeated_registration_replays_its_201(user_client, tables):
    key = str(uuid.uuid4())
    first = post_json(user_client, "/register", ALICE, keyed(key))
    again = post_json(user_client, "/register", ALICE, keyed(key))
    plain = post_json(user_client, "/register", ALICE)

    assert first.status_code == 201, first.body
    assert (again.status_code, again.json_body) == (201, first.json_body)
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert plain.status_code == 409  # a new request without the key: the name is taken
    assert "password" not in again.body.decode()


def test_an_anonymous_key_is_scoped_by_the_source(user_client, tables):
    """Behind the gateway each client's address arrives as X-Forwarded-For: two clients using
    the same key are two callers, and the second never sees the first's answer."""
    key = str(uuid.uuid4())
    mine = keyed(key, **{"X-Forwarded-For": "203.0.113.7"})
    theirs = keyed(key, **{"X-Forwarded-For": "198.51.100.9"})
    assert post_json(user_client, "/register", ALICE, mine).status_code == 201

    response = post_json(user_client, "/register", ALICE, theirs)

    assert response.status_code == 422
    assert "alice" not in response.body.decode()


def test_promotion_and_deletion_replay(user_client, register, login, tables):
    register("alice")
    token = login("alice")
    key = str(uuid.uuid4())
    promoted = user_client.http.put("/user/promote/alice", headers=keyed(key, **bearer(token)))
    again = user_client.http.put("/user/promote/alice", headers=keyed(key, **bearer(token)))
    assert promoted.status_code == 200, promoted.body
    assert (again.json_body, again.headers[idempotency.REPLAYED_HEADER]) == (
        promoted.json_body, "true"
    )  # fmt: skip

    key = str(uuid.uuid4())
    deleted = user_client.http.delete("/users/alice", headers=keyed(key, **bearer(token)))
    again = user_client.http.delete("/users/alice", headers=keyed(key, **bearer(token)))
    assert (deleted.status_code, again.status_code) == (204, 204)
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"


def test_login_keeps_no_record_and_a_stale_token_does_not_spoil_a_keyed_register(
    user_client, register, tables
):
    """A login makes nothing and is safe to repeat; its answer (a live token) must not sit in
    the records for a day. A client sending its old, invalid token along with a key on an
    anonymous route is not refused for it."""
    stale = {"Authorization": "Bearer not-a-valid.jwt.token"}
    assert post_json(user_client, "/register", ALICE, keyed("k-reg", **stale)).status_code == 201
    records = services.USER.stage_env("local")[idempotency.TABLE_SETTING]
    before = tables.scan(TableName=records)["Count"]

    login = post_json(user_client, "/login", ALICE, keyed("k-login"))

    assert login.status_code == 200
    assert idempotency.REPLAYED_HEADER not in login.headers
    assert tables.scan(TableName=records)["Count"] == before
