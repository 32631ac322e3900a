"""user_api's metrics, read back from the EMF lines it writes (``tests/support/emf.py``): the
requests by route and status class, the business counts, and its event handlers' counts."""

from __future__ import annotations

from typing import Any

import pytest
from chalice.local import LambdaEventConverter

from svckit import events
from tests.conftest import bearer, post_json
from tests.support import lambda_events as le
from tests.support.apps import load_app
from tests.support.emf import captured
from tests.user_api.test_events import deliver, product_added, row
from tools import services

BASE = {"service": "user_api", "stage": "local"}
PASSWORD = "correct-horse-1234"


@pytest.fixture
def out(user_client):
    with captured(load_app(services.USER).service) as lines:
        yield lines


def totals(out, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``name``'s total per dimension set (as a sorted tuple of pairs)."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for point in out.points(name):
        key = tuple(sorted(point.dimensions.items()))
        found[key] = found.get(key, 0) + point.total
    return found


def key(**dimensions: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**BASE, **dimensions}.items()))


def test_a_registration_is_one_request_line_and_one_business_line(user_client, out):
    response = post_json(user_client, "/register", {"username": "ann", "password": PASSWORD})

    assert response.status_code == 201
    blobs = out.emf()
    assert len(blobs) == 2
    by_metric = {tuple(m["Name"] for m in b["_aws"]["CloudWatchMetrics"][0]["Metrics"]): b
                 for b in blobs}  # fmt: skip
    business = by_metric["UsersRegistered",]
    assert business["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "stage"]]
    assert {k: v for k, v in business.items() if k != "_aws"} == {**BASE, "UsersRegistered": [1.0]}
    request = by_metric["Requests", "Latency"]
    assert request["route"] == "POST /register"
    assert request["status_class"] == "2xx"
    assert request["Requests"] == [1.0]


def test_each_route_alias_is_its_own_route_and_4xx_is_counted(user_client, out):
    assert user_client.http.get("/users/nobody").status_code == 404
    assert user_client.http.get("/user/nobody").status_code == 404
    assert post_json(user_client, "/users", {"username": "x"}).status_code == 400

    assert totals(out, "Requests") == {
        key(route="GET /users/{username}", status_class="4xx"): 1,
        key(route="GET /user/{username}", status_class="4xx"): 1,
        key(route="POST /users", status_class="4xx"): 1,
    }
    assert len(out.points("Latency")) == 3
    assert not out.points("UsersRegistered")


def test_a_server_error_is_5xx(user_client, out, monkeypatch):
    users = load_app(services.USER).users

    def broken(username: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(users, "get", broken)
    assert user_client.http.get("/users/ann").status_code == 500
    assert totals(out, "Requests") == {key(route="GET /users/{username}", status_class="5xx"): 1}


def test_failed_and_throttled_logins(register, user_client, monkeypatch, out):
    assert register("ann").status_code == 201
    limits = load_app(services.USER).login_limits
    monkeypatch.setattr(limits, "clock", lambda: 1_700_000_110.0)  # one window throughout
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.9")
    out.clear()
    for _ in range(5):
        assert (
            post_json(user_client, "/login", {"username": "ann", "password": "no"}).status_code
            == 401
        )
    assert (
        post_json(user_client, "/login", {"username": "ann", "password": PASSWORD}).status_code
        == 429
    )

    assert totals(out, "LoginsFailed") == {key(): 5}
    assert totals(out, "LoginsThrottled") == {key(): 1}
    assert totals(out, "Requests") == {
        key(route="POST /login", status_class="4xx"): 6,
    }


def test_points_granted_by_an_admin_and_a_deletion(register, admin_token, user_client, out):
    out.clear()  # the admin's own registration
    assert register("ann").status_code == 201
    grant = post_json(user_client, "/users/ann/points", {"points": 7}, bearer(admin_token))
    assert grant.status_code == 200
    assert user_client.http.delete("/users/ann", headers=bearer(admin_token)).status_code == 204

    assert totals(out, "PointsGranted") == {key(): 7}
    assert totals(out, "UsersDeleted") == {key(): 1}
    assert totals(out, "UsersRegistered") == {key(): 1}


@pytest.fixture
def john(register, tables) -> str:
    assert register("john_doe").status_code == 201
    return row(tables, "john_doe")["account_id"]["S"]


def test_an_applied_event_counts_its_points_and_lag_a_duplicate_is_skipped(user_client, john, out):
    event = product_added("john_doe", john)
    out.clear()
    assert deliver(user_client, event, event)["batchItemFailures"] == []

    kind = {"type": events.PRODUCT_ADDED}
    assert totals(out, "EventsApplied") == {key(**kind): 1}
    assert totals(out, "EventsSkipped") == {key(**kind): 1}
    assert totals(out, "PointsGranted") == {key(): 10}
    [lag] = out.points("EventLag")
    assert lag.unit == "Milliseconds"
    assert lag.dimensions == {**BASE, **kind}
    [value] = lag.values
    assert value > 0  # the envelope's time is a fixed moment in the past
    assert not out.points("EventsFailed")
    assert not out.points("Requests")  # an event handler is not a request


def test_failures_are_counted_by_type_and_the_last_try_as_dead_lettered(user_client, john, out):
    out.clear()
    no_creator = le.envelope(events.PRODUCT_ADDED, {"product_id": "x"}, events.PRODUCT_SOURCE)
    records = [
        le.sqs_record("not json at all", receive_count=1),
        le.sqs_record(le.eventbridge_body(no_creator), receive_count=4),
        le.sqs_record(le.eventbridge_body(no_creator), receive_count=events.MAX_RECEIVE_COUNT),
    ]
    answer = user_client.lambda_.invoke("on_product_events", le.sqs_event(records)).payload
    assert len(answer["batchItemFailures"]) == 3

    assert totals(out, "EventsFailed") == {
        key(type=events.UNREADABLE): 1,
        key(type=events.PRODUCT_ADDED): 2,
    }
    assert totals(out, "EventsDeadLettered") == {key(type=events.PRODUCT_ADDED): 1}
    assert not out.points("EventsApplied")
    assert not out.points("EventLag")


def test_an_unsubscribed_type_is_skipped_under_a_fixed_name(user_client, john, out):
    out.clear()
    other = le.envelope("SomethingNew", {"product_id": "p1"}, events.PRODUCT_SOURCE)
    assert deliver(user_client, other)["batchItemFailures"] == []
    assert totals(out, "EventsSkipped") == {key(type=events.OTHER_TYPE): 1}


def test_relayed_events_are_counted_by_type(user_client, john, tables, published, out):
    from svckit.dynamo import from_item

    registered = from_item(row(tables, "john_doe"))
    out.clear()
    records = [
        le.stream_record("INSERT", {"username_key": "john_doe"}, new=registered),
        le.stream_record("MODIFY", {"username_key": "john_doe"}, new=registered, old=registered),
        le.stream_record("REMOVE", {"username_key": "john_doe"}, old=registered),
    ]
    answer = user_client.lambda_.invoke("relay_user_changes", le.stream_event(records)).payload
    assert answer == {"batchItemFailures": []}

    assert len(published()) == 2
    assert totals(out, "EventsRelayed") == {
        key(type=events.USER_REGISTERED): 1,
        key(type=events.USER_DELETED): 1,
    }
