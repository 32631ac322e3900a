"""The gateway's own routes: ``/health`` aggregating the services, and ``/greet/{name}``."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from chalice.test import Client

from tests.gateway_api.stubs import ClosedPort, Reply, Stub, json_reply


def test_health_is_ok_when_both_services_are(
    gateway: Client, user_stub: Stub, product_stub: Stub
) -> None:
    response = gateway.http.get("/health", headers={"X-Request-Id": "probe-1"})

    assert response.status_code == 200
    body = response.json_body
    assert body["status"] == "ok"
    assert body["service"] == "gateway_api"
    assert body["time"].endswith("Z")
    assert set(body["dependencies"]) == {"user_api", "product_api"}
    for dependency in body["dependencies"].values():
        assert dependency["status"] == "ok"
        assert dependency["latency_ms"] >= 0
    # Each service was asked once, with the caller's request id.
    for stub in (user_stub, product_stub):
        assert [(c.path, c.headers["x-request-id"]) for c in stub.calls()] == [
            ("/health", "probe-1")
        ]


def test_health_is_503_naming_the_service_that_is_down(
    make_gateway: Callable[..., Client], user_stub: Stub, closed_port: ClosedPort
) -> None:
    client = make_gateway(USER_API_URL=user_stub.url, PRODUCT_API_URL=closed_port.url)

    response = client.http.get("/health")

    assert response.status_code == 503
    body = response.json_body
    assert body["status"] == "degraded"
    assert body["service"] == "gateway_api"
    assert body["Code"] == "ServiceUnavailableError"
    assert body["Message"] == "product service is unavailable"
    assert body["dependencies"]["user_api"]["status"] == "ok"
    assert body["dependencies"]["product_api"]["status"] == "unavailable"


def test_health_names_both_when_both_are_down(
    make_gateway: Callable[..., Client], closed_port: ClosedPort
) -> None:
    client = make_gateway(USER_API_URL=closed_port.url, PRODUCT_API_URL=closed_port.url)

    response = client.http.get("/health")

    assert response.status_code == 503
    assert response.json_body["Message"] == "user service and product service are unavailable"


def test_health_counts_an_unhealthy_answer_as_failing(gateway: Client, user_stub: Stub) -> None:
    user_stub.reply("GET", "/health", json_reply(500, {"status": "broken"}))

    response = gateway.http.get("/health")

    assert response.status_code == 503
    assert response.json_body["Message"] == "user service is unavailable"
    assert response.json_body["dependencies"]["user_api"] == {
        "status": "failing",
        "latency_ms": pytest.approx(response.json_body["dependencies"]["user_api"]["latency_ms"]),
        "http_status": 500,
    }
    assert response.json_body["dependencies"]["product_api"]["status"] == "ok"


def test_health_probes_in_parallel_within_its_budget(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub
) -> None:
    """Both services stalled: the answer takes one budget, not two, and names both. (A 1 s
    budget: sequential probes would take 2 s, so the bound below has a second of slack.)"""
    client = make_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, HEALTH_TIMEOUT="1.0"
    )
    for stub in (user_stub, product_stub):
        stub.reply("GET", "/health", Reply(stall=True))

    started = time.monotonic()
    response = client.http.get("/health")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert {d["status"] for d in response.json_body["dependencies"].values()} == {"timeout"}
    assert 1.0 <= elapsed < 2.0


def test_greet_answers_plain_text(gateway_client: Client) -> None:
    response = gateway_client.http.get("/greet/John")

    assert response.status_code == 200
    assert response.body == b"Hello, John!"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["X-Request-Id"]


def test_greet_accepts_a_100_character_name(gateway_client: Client) -> None:
    response = gateway_client.http.get("/greet/" + "a" * 100)

    assert response.status_code == 200
    assert response.body == ("Hello, " + "a" * 100 + "!").encode()


def test_greet_rejects_a_name_over_100_characters(gateway_client: Client) -> None:
    response = gateway_client.http.get("/greet/" + "a" * 101)

    assert response.status_code == 400
    assert response.json_body == {
        "Code": "BadRequestError",
        "Message": "name must be at most 100 characters",
    }


def test_greet_calls_no_service(gateway: Client, user_stub: Stub, product_stub: Stub) -> None:
    assert gateway.http.get("/greet/Ann").status_code == 200
    assert user_stub.calls() == product_stub.calls() == []
