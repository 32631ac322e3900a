"""The devserver's two differences from stock ``chalice local``, checked as socket facts.

Stock Chalice leaves Nagle's algorithm on (a keep-alive response then waits for the client's
delayed ACK: ~44 ms a request) and listens with a backlog of 5 (a burst of new connections
overflows it). How much faster the devserver is belongs to ``make bench``; what must not regress
is the mechanism, so this reads it off the sockets: ``TCP_NODELAY`` on each accepted connection,
and the listen backlog as the kernel reports it (``ss``: Send-Q of a listening socket). Stock
Chalice's classes are run through the same checks to show they tell the two apart.
"""

from __future__ import annotations

import functools
import http.client
import json
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, ThreadedHTTPServer

from tests.support.apps import load_app
from tools import devserver, services


def _probe_class(handler: type[ChaliceRequestHandler], seen: list[int]) -> type:
    class Probe(handler):  # type: ignore[misc, valid-type]
        def handle(self) -> None:
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            super().handle()

    return Probe


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(server_cls: type, handler_cls: type) -> tuple[int, list[int]]:
        seen: list[int] = []
        app = load_app(services.GATEWAY).app  # /greet needs no AWS, no other service
        handler = functools.partial(
            _probe_class(handler_cls, seen), app_object=app, config=Config.create()
        )
        server = server_cls(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _listen_backlog(port: int) -> int:
    """The kernel's backlog for the listening socket on ``port`` (``ss`` prints it as Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    return int(out[2])


@pytest.mark.parametrize(
    ("server_cls", "handler_cls", "nodelay", "backlog"),
    [
        (
            devserver.BackloggedHTTPServer,
            devserver.NoDelayRequestHandler,
            True,
            devserver.LISTEN_BACKLOG,
        ),
        (ThreadedHTTPServer, ChaliceRequestHandler, False, 5),
    ],
    ids=["devserver", "stock chalice local"],
)
def test_accepted_sockets_and_listen_backlog(serve, server_cls, handler_cls, nodelay, backlog):
    port, seen = serve(server_cls, handler_cls)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/greet/Ada")
        response = conn.getresponse()
        assert response.read() == b"Hello, Ada!"
    finally:
        conn.close()
    assert [bool(flag) for flag in seen] == [nodelay]
    assert _listen_backlog(port) == backlog


def _call(port: int, method: str, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/no/such/route"),
        ("GET", "/no/such/route?limit=5"),
        ("OPTIONS", "/health"),
        ("DELETE", "/greet/Ada"),
    ],
)
def test_what_no_view_serves_is_the_contracts_404_with_a_request_id(serve, method, path):
    """Stock ``chalice local`` answers ``403 {"message": "Missing Authentication Token"}`` (and an
    empty 200 for OPTIONS); the deployed stages rewrite API Gateway's answer to the contract's 404,
    and the devserver answers the same."""
    port, _ = serve(devserver.BackloggedHTTPServer, devserver.NoDelayRequestHandler)

    status, headers, body = _call(port, method, path)

    assert status == 404
    assert json.loads(body) == {
        "Code": "NotFoundError",
        "Message": f"no route for {method} {path.split('?')[0]}",
    }
    assert headers["Content-Type"] == "application/json"
    assert len(headers["X-Request-Id"]) >= 16


def test_an_unknown_route_echoes_the_callers_request_id(serve):
    port, _ = serve(devserver.BackloggedHTTPServer, devserver.NoDelayRequestHandler)

    _, headers, _ = _call(port, "GET", "/nowhere", {"X-Request-Id": "trace-me-1"})
    _, unsafe, _ = _call(port, "GET", "/nowhere", {"X-Request-Id": "bad id\u00e9"})

    assert headers["X-Request-Id"] == "trace-me-1"
    assert unsafe["X-Request-Id"] != "bad id\u00e9"


def test_stock_chalice_local_answers_unknown_routes_otherwise(serve):
    """What the devserver changes, shown on stock Chalice (so the test above can fail)."""
    port, _ = serve(ThreadedHTTPServer, ChaliceRequestHandler)

    status, headers, body = _call(port, "GET", "/no/such/route")

    assert status == 403
    assert b"Missing Authentication Token" in body
    assert "X-Request-Id" not in headers
