"""A keep-alive connection the service closes just as the gateway's next request goes out.

The request never reached the service's code, so for a GET the gateway sends it once more on a
new connection instead of answering a spurious 502; a write is never sent twice (the service may
have stored it: no byte of an answer proves it did not). The stub closes a reused connection
the moment a request arrives on it (``Stub.close_idle``), which is that race, made certain.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.test import Client

from tests.conftest import bearer
from tests.gateway_api.stubs import ClosedPort, Reply, Stub, json_reply
from tests.support.apps import load_app
from tools import services

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def log_lines() -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """``log_lines(message)``: the gateway's log lines so far with that message, as JSON."""
    log = load_app(services.GATEWAY).service.log
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(log.registered_formatter)
    logging.getLogger(log.name).addHandler(handler)

    def lines(message: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in sink.getvalue().splitlines()]
        return [line for line in parsed if line["message"] == message]

    try:
        yield lines
    finally:
        logging.getLogger(log.name).removeHandler(handler)


def test_a_get_on_a_connection_closed_by_the_service_is_sent_again(
    gateway: Client, product_stub: Stub
) -> None:
    product_stub.reply("GET", "/products", json_reply(200, [{"product_id": "p-1"}]))
    assert gateway.http.get("/products").status_code == 200  # leaves an idle pooled connection
    product_stub.close_idle = True

    response = gateway.http.get("/products")

    assert response.status_code == 200
    assert response.json_body == [{"product_id": "p-1"}]
    first, dropped, retried = product_stub.calls()
    assert (first.dropped, dropped.dropped, retried.dropped) == (False, True, False)
    assert first.client_port == dropped.client_port  # the reused connection ...
    assert retried.client_port != dropped.client_port  # ... and a new one for the retry
    assert retried.headers["x-request-id"] == dropped.headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path", "stub_name", "up_path"),
    [
        ("POST", "/register_user", "user", "/register"),
        ("POST", "/add_product", "product", "/add_product"),
        ("PUT", "/user/promote/john_doe", "user", "/user/promote/john_doe"),
    ],
)
def test_a_write_on_a_connection_closed_by_the_service_is_never_sent_again(
    gateway: Client,
    user_stub: Stub,
    product_stub: Stub,
    issue_token: Callable[..., str],
    method: str,
    path: str,
    stub_name: str,
    up_path: str,
) -> None:
    stub = user_stub if stub_name == "user" else product_stub
    stub.reply(method, up_path, json_reply(201, {"ok": True}))
    headers = {**JSON, **bearer(issue_token("john_doe"))}
    assert gateway.http.request(method, path, headers=headers, body=b"{}").status_code == 201
    stub.close_idle = True

    response = gateway.http.request(method, path, headers=headers, body=b"{}")

    assert response.status_code == 502
    assert response.json_body["Code"] == "BadGatewayError"
    assert [c.dropped for c in stub.calls()] == [False, True]  # sent once, not again


def test_a_get_closed_unanswered_on_a_new_connection_is_not_sent_again(
    gateway: Client, product_stub: Stub
) -> None:
    """A new connection closed without an answer proves nothing: the service may have taken
    the request and crashed on it, and sending it again would only crash it again."""
    product_stub.reply("GET", "/products", Reply(hang_up=True))

    response = gateway.http.get("/products")

    assert response.status_code == 502
    assert response.json_body == {"Code": "BadGatewayError", "Message": "product service failed"}
    assert len(product_stub.calls()) == 1


def test_a_refused_get_is_tried_twice_and_a_refused_write_once(
    make_gateway: Callable[..., Client],
    closed_port: ClosedPort,
    log_lines: Callable[[str], list[dict[str, Any]]],
) -> None:
    """A refused connection never reached anything: a GET may try once more (a restarting
    service), still answering 503 at once when both are refused. A write is not tried again
    even then: the rule is one, not a list of exceptions to it."""
    client = make_gateway(USER_API_URL=closed_port.url, PRODUCT_API_URL=closed_port.url)

    got = client.http.get("/users")
    posted = client.http.post("/register_user", headers=JSON, body=b"{}")

    assert (got.status_code, posted.status_code) == (503, 503)
    retried = [(line["method"], line["error"]) for line in log_lines("upstream call retried")]
    assert retried == [("GET", "NewConnectionError")]  # once, and only the GET
    failed = [(line["method"], line["tries"]) for line in log_lines("upstream call failed")]
    assert failed == [("GET", 2), ("POST", 1)]
