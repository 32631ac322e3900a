"""product_api's metrics, read back from its EMF lines: products added and deleted (by a request
and by an account's cascade), and the relay's count of what reached the bus."""

from __future__ import annotations

import pytest

from svckit import events
from tests.conftest import bearer, post_json
from tests.product_api.test_events import OLD, deliver, relay_twenty_refusing_the_13th, user_deleted
from tests.support.apps import load_app
from tests.support.emf import captured
from tools import services

BASE = {"service": "product_api", "stage": "local"}


@pytest.fixture
def add(product_client, issue_token):
    def _add(username: str, product_id: str, account: str | None) -> int:
        token = issue_token(username, (), account)
        body = {"product_id": product_id, "product_name": "Laptop"}
        return post_json(product_client, "/add_product", body, bearer(token)).status_code

    return _add


@pytest.fixture
def out(product_client):
    with captured(load_app(services.PRODUCT).service) as lines:
        yield lines


def total(out, name: str, **dimensions: str) -> float:
    wanted = {**BASE, **dimensions}
    return sum(p.total for p in out.points(name) if p.dimensions == wanted)


def test_adding_and_deleting_a_product(product_client, add, issue_token, out):
    assert add("ann", "p1", OLD) == 201
    assert add("ann", "p1", OLD) == 409  # taken: not added
    token = bearer(issue_token("ann", (), OLD))
    assert product_client.http.delete("/products/p1", headers=token).status_code == 204
    assert product_client.http.delete("/products/p1", headers=token).status_code == 404

    assert total(out, "ProductsAdded") == 1
    assert total(out, "ProductsDeleted") == 1
    assert total(out, "Requests", route="POST /add_product", status_class="2xx") == 1
    assert total(out, "Requests", route="POST /add_product", status_class="4xx") == 1
    assert total(out, "Requests", route="DELETE /products/{product_id}", status_class="2xx") == 1
    assert total(out, "Requests", route="DELETE /products/{product_id}", status_class="4xx") == 1


def test_a_view_that_breaks_is_counted_as_5xx(product_client, out, monkeypatch):
    products = load_app(services.PRODUCT).products

    def broken(product_id: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(products, "get", broken)
    assert product_client.http.get("/products/p1").status_code == 500
    assert total(out, "Requests", route="GET /products/{product_id}", status_class="5xx") == 1
    [latency] = out.points("Latency")
    assert latency.dimensions["status_class"] == "5xx"


def test_the_cascade_counts_its_deletions_and_the_event(product_client, add, out):
    for n in range(3):
        assert add("john_doe", f"old-{n}", OLD) == 201
    out.clear()
    event = user_deleted("john_doe", OLD)
    assert deliver(product_client, event) == {"batchItemFailures": []}
    assert deliver(product_client, event) == {"batchItemFailures": []}  # redelivered

    assert total(out, "ProductsDeleted") == 3
    assert total(out, "EventsApplied", type=events.USER_DELETED) == 1
    assert total(out, "EventsSkipped", type=events.USER_DELETED) == 1
    assert len(out.points("EventLag")) == 1


def test_only_the_events_on_the_bus_are_counted_as_relayed(product_client, tables, published, out):
    """Twenty product inserts, the bus refusing the 13th: what ``EventsRelayed`` says is what
    the bus received (the entries after the refused one in its call included)."""
    _, answer = relay_twenty_refusing_the_13th(product_client)
    assert len(answer["batchItemFailures"]) == 1

    on_the_bus = published()
    assert 12 <= len(on_the_bus) < 20
    assert total(out, "EventsRelayed", type=events.PRODUCT_ADDED) == len(on_the_bus)
