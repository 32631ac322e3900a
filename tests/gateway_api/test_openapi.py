"""The gateway's document says where each route forwards; the gateway does forward there."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from chalice.test import Client

from svckit import openapi
from tests.conftest import bearer
from tests.gateway_api.stubs import Stub, json_reply
from tests.support.apps import load_app
from tools import services


def _forwarded_routes() -> list[tuple[str, str, str, str]]:
    """(method, gateway path, service, service path) from each view's annotation."""
    routes = []
    for path, methods in load_app(services.GATEWAY).app.routes.items():
        for method, entry in methods.items():
            op = openapi.operation_of(entry.view_function)
            if op is not None and op.forwards is not None:
                routes.append((method, path, *op.forwards))
    return sorted(routes)


def _filled(path: str) -> str:
    return re.sub(r"{[^}]+}", "john_doe", path)


def test_every_forwarding_route_is_annotated() -> None:
    # 13 forwarded views are API.md's gateway table; greet, health and openapi.json answer
    # themselves. A new forwarding view without its annotation lands in neither count.
    own = {"/greet/{name}", "/health", openapi.ROUTE}
    routes = load_app(services.GATEWAY).app.routes
    every = {(m, p) for p, methods in routes.items() for m in methods if p not in own}
    assert every == {(m, p) for m, p, _, _ in _forwarded_routes()}


@pytest.mark.parametrize(("method", "path", "target", "up_path"), _forwarded_routes())
def test_the_gateway_forwards_where_its_document_says(
    gateway: Client,
    user_stub: Stub,
    product_stub: Stub,
    issue_token: Callable[..., str],
    method: str,
    path: str,
    target: str,
    up_path: str,
) -> None:
    stub = {"user_api": user_stub, "product_api": product_stub}[target]
    stub.reply(method, _filled(up_path), json_reply(200, {}))
    headers = {"Content-Type": "application/json", **bearer(issue_token("john_doe"))}
    body = b"{}" if method in ("POST", "PUT") else b""

    gateway.http.request(method, _filled(path), headers=headers, body=body)

    [call] = stub.calls()
    assert (call.method, call.path) == (method, _filled(up_path))


def test_an_empty_idempotency_key_reaches_the_service(gateway: Client, user_stub: Stub) -> None:
    # schemathesis: the gateway dropped an empty key, so the write ran unkeyed (201) where the
    # service itself refuses the key (400). Sent on as sent, the service gives its 400.
    user_stub.reply("POST", "/register", json_reply(400, {"Code": "BadRequestError"}))

    gateway.http.post(
        "/register_user",
        headers={"Content-Type": "application/json", "Idempotency-Key": ""},
        body=json.dumps({"username": "john_doe", "password": "correct-horse-1"}),
    )

    [call] = user_stub.calls()
    assert call.headers.get("idempotency-key") == ""


def test_the_gateway_document_is_made_from_the_services_and_kept(
    gateway: Client, user_stub: Stub, product_stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = load_app(services.GATEWAY).service.openapi
    monkeypatch.setattr(holder, "_built", None)
    user_doc = openapi.build(load_app(services.USER).app, "user_api")
    product_doc = openapi.build(load_app(services.PRODUCT).app, "product_api")
    product_stub.reply("GET", openapi.ROUTE, json_reply(503, {"Code": "x", "Message": "y"}))
    user_stub.reply("GET", openapi.ROUTE, json_reply(200, user_doc))

    down = gateway.http.get(openapi.ROUTE)
    assert down.status_code == 503  # a service without its document: nothing kept
    product_stub.reply("GET", openapi.ROUTE, json_reply(200, product_doc))
    first: Any = json.loads(gateway.http.get(openapi.ROUTE).body)
    second = gateway.http.get(openapi.ROUTE)

    assert "/register_user" in first["paths"]
    assert second.status_code == 200
    assert len(product_stub.calls()) == 2  # the failed try and the one kept: never again
