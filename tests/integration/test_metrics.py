"""Metrics on real processes: a request to the running system changes, on the runner's Prometheus
endpoint, exactly the series it should, with the route, status class, target and type labels the
dashboards query (``tools.local.metrics`` reading the services' EMF lines from their output)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.conftest import PASSWORD
from tests.support.prometheus import Samples, scrape, value
from tests.support.system import bearer, get, post, wait_until
from tools.localrun import LocalSystem

pytestmark = pytest.mark.integration

ARRIVAL_SECONDS = 15.0  # a line's way through the log writer, the pipe and the exporter
EVENT_SECONDS = 30.0  # a product's way through stream, relay, bus, queue and consumer
LOCAL = {"stage": "local"}


def changed(system: LocalSystem, before: Samples, name: str, **labels: str) -> Samples:
    """The first scrape in which ``name{labels}`` moved from ``before``."""
    start = value(before, name, **labels)
    return wait_until(
        lambda: (
            (now := scrape(system.ports.metrics)) and value(now, name, **labels) != start and now
        ),
        ARRIVAL_SECONDS,
    )


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_gateway_request_is_counted_by_route_and_status_class(system, gateway):
    route = {**LOCAL, "service": "gateway_api", "route": "GET /greet/{name}"}
    ok = {**route, "status_class": "2xx"}
    bad = {**route, "status_class": "4xx"}
    before = scrape(system.ports.metrics)

    assert get(gateway, "/greet/Prometheus").status == 200
    after = changed(system, before, "shop_requests_total", **ok)

    assert delta(before, after, "shop_requests_total", **ok) == 1
    assert delta(before, after, "shop_latency_milliseconds_count", **ok) == 1
    assert delta(before, after, "shop_latency_milliseconds_sum", **ok) > 0
    assert delta(before, after, "shop_requests_total", **bad) == 0
    assert value(after, "shop_cold_start_total", service="gateway_api", **LOCAL) >= 1

    assert get(gateway, "/greet/" + "x" * 101).status == 400
    after_bad = changed(system, after, "shop_requests_total", **bad)
    assert delta(after, after_bad, "shop_requests_total", **bad) == 1
    assert delta(after, after_bad, "shop_requests_total", **ok) == 0


def test_a_forwarded_request_is_counted_in_both_services_and_timed_upstream(
    system, gateway, unique: Callable[[str], str]
):
    route = {**LOCAL, "route": "GET /users/{username}", "status_class": "4xx"}
    upstream = {**LOCAL, "service": "gateway_api", "target": "user_api"}
    before = scrape(system.ports.metrics)

    assert get(gateway, f"/users/{unique('nobody')}").status == 404
    after = changed(system, before, "shop_requests_total", service="user_api", **route)
    after = changed(system, before, "shop_requests_total", service="gateway_api", **route)

    assert delta(before, after, "shop_requests_total", service="user_api", **route) == 1
    assert delta(before, after, "shop_requests_total", service="gateway_api", **route) == 1
    assert delta(before, after, "shop_upstream_latency_milliseconds_count", **upstream) == 1
    failures = {k: v for k, v in after.items() if k[0] == "shop_upstream_failures_total"}
    assert failures == {k: v for k, v in before.items() if k[0] == "shop_upstream_failures_total"}


def test_business_counts_and_the_events_of_a_product(system, gateway, unique: Callable[[str], str]):
    user_api = {**LOCAL, "service": "user_api"}
    product_api = {**LOCAL, "service": "product_api"}
    added = {**LOCAL, "type": "ProductAdded"}
    before = scrape(system.ports.metrics)
    name = unique("metered")

    assert post(gateway, "/register_user", {"username": name, "password": PASSWORD}).status == 201
    assert (
        post(gateway, "/login_user", {"username": name, "password": "wrong-password"}).status == 401
    )
    token = post(gateway, "/login_user", {"username": name, "password": PASSWORD}).json()
    product = {"product_id": unique("p"), "product_name": "Meter"}
    reply = post(gateway, "/add_product", product, bearer(token["access_token"]))
    assert reply.status == 201, reply

    after = changed(system, before, "shop_products_added_total", **product_api)
    assert delta(before, after, "shop_products_added_total", **product_api) == 1
    assert delta(before, after, "shop_users_registered_total", **user_api) == 1
    assert delta(before, after, "shop_logins_failed_total", **user_api) == 1
    # Then the events: relayed by product_api's worker, applied by user_api's (other tests'
    # events may still be on their way, so at least one, not exactly one).
    applied = wait_until(
        lambda: (
            (now := scrape(system.ports.metrics))
            and delta(before, now, "shop_events_applied_total", service="user_api", **added) >= 1
            and now
        ),
        EVENT_SECONDS,
    )
    assert delta(before, applied, "shop_events_relayed_total", service="product_api", **added) >= 1
    lag = {"service": "user_api", **added}
    assert delta(before, applied, "shop_event_lag_milliseconds_count", **lag) >= 1
    assert delta(before, applied, "shop_points_granted_total", **user_api) >= 10
