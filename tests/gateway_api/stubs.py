"""Stand-in services for the gateway's tests: real HTTP servers on loopback, recording each call.

The gateway's job is HTTP (pooling, timeouts, headers, bytes), so its tests talk to real sockets
rather than a mocked client: a stub is a stdlib ``ThreadingHTTPServer`` on a free port, speaking
HTTP/1.1 with keep-alive like the real services, answering from a table of canned replies and
recording what it received so a test can assert what the gateway sent.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from infra.gateway_responses import GATEWAY_RESPONSES

# Upper bound on how long a stalled reply holds its thread; close() releases it at once.
STALL_LIMIT_SECONDS = 5.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # with the query string, exactly as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client_port: int  # which connection it came on: keep-alive reuses one
    dropped: bool = False  # closed unanswered (close_idle): the service never processed it


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    stall: bool = False  # hold the answer until the stub is closed (a slow service)
    delay: float = 0.0  # seconds before answering (a service that is slow but answers)
    garbage: bool = False  # answer with something that is not HTTP (a broken service)
    hang_up: bool = False  # close the connection without answering (a crash mid-request)
    # Seconds between single bytes of the body (a service that keeps sending, slowly); with
    # trickle_head, of the status line and headers too. Stops when the stub is closed.
    trickle: float = 0.0
    trickle_head: bool = False
    unframed: bool = False  # no Content-Length: the body ends when the connection closes


def json_reply(status: int, body: Any, **headers: str) -> Reply:
    return Reply(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


def api_gateway_reply(kind: str, status: int | None = None, message: str = "") -> Reply:
    """What a deployed service's API Gateway answers by itself (the function crashed, timed out
    or was never called), byte for byte as ``infra/gateway_responses.py`` rewrites it: the
    contract's shape, with API Gateway's own request id in ``X-Request-Id``, not the one the
    gateway sent.

    ``kind`` is a gateway response type (``DEFAULT_5XX``, ``INTEGRATION_TIMEOUT``, ...);
    ``status`` is the status API Gateway keeps for the types that do not fix one, and
    ``message`` its ``$context.error.messageString`` ("Internal server error", ...).
    """
    response = GATEWAY_RESPONSES[kind]
    template = response["responseTemplates"]["application/json"]
    body = template.replace("$context.error.messageString", json.dumps(message))
    fixed = response.get("statusCode")
    assert fixed is None or status is None or int(fixed) == status, (kind, status)
    answered = int(fixed) if fixed is not None else status
    assert answered is not None, f"{kind} keeps API Gateway's status: give one"
    return Reply(
        status=answered,
        body=body.encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": str(uuid.uuid4())},
    )


class Stub:
    """One fake service. ``replies`` maps ``(METHOD, path without query)`` to a :class:`Reply`;
    ``GET /health`` answers ok unless replaced; anything else is a contract-shaped 404."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.replies: dict[tuple[str, str], Reply] = {
            ("GET", "/health"): json_reply(200, {"status": "ok", "service": name}),
        }
        self.received: list[Received] = []
        # Close a keep-alive connection, unanswered, when a request arrives on it after an
        # earlier answer: a service's idle timeout firing just as the gateway's next request goes
        # out. (Closing right after answering would not do: urllib3 sees that close before it
        # reuses the connection, and opens a new one.)
        self.close_idle = False
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reply(self, method: str, path: str, reply: Reply) -> None:
        self.replies[(method, path)] = reply

    def calls(self) -> list[Received]:
        """A snapshot of what the stub has received so far, in order."""
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        answered_before = getattr(handler, "answered", 0)
        dropped = self.close_idle and answered_before > 0
        with self._lock:
            self.received.append(
                Received(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    client_port=handler.client_address[1],
                    dropped=dropped,
                )
            )
        if dropped:
            handler.close_connection = True
            return
        handler.answered = answered_before + 1  # type: ignore[attr-defined]
        route = (handler.command, handler.path.split("?", 1)[0])
        reply = self.replies.get(route) or json_reply(
            404, {"Code": "NotFoundError", "Message": f"no stub for {route}"}
        )
        if reply.stall:
            self._release.wait(STALL_LIMIT_SECONDS)
        if reply.delay:
            self._release.wait(reply.delay)
        if reply.hang_up:
            handler.close_connection = True
            return
        if reply.garbage:
            handler.wfile.write(b"this is not HTTP\r\n\r\n")
            handler.close_connection = True
            return
        headers = dict(reply.headers)
        if reply.unframed:
            headers["Connection"] = "close"
            handler.close_connection = True
        else:
            headers["Content-Length"] = str(len(reply.body))
        if reply.trickle_head:
            lines = [f"HTTP/1.1 {reply.status} Slow", *(f"{k}: {v}" for k, v in headers.items())]
            self._trickle(handler, ("\r\n".join(lines) + "\r\n\r\n").encode(), reply.trickle)
        else:
            handler.send_response(reply.status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
        if reply.trickle:
            self._trickle(handler, reply.body, reply.trickle)
        else:
            handler.wfile.write(reply.body)

    def _trickle(self, handler: BaseHTTPRequestHandler, data: bytes, interval: float) -> None:
        """Send ``data`` one byte at a time, ``interval`` seconds apart, until the stub closes."""
        for i in range(len(data)):
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()
            if self._release.wait(interval):
                handler.close_connection = True
                return

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real services speak

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without this, Nagle holds the body for
                # the client's delayed ACK and every call takes 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _handle(self) -> None:
                try:
                    stub._answer(self)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    self.close_connection = True  # the gateway gave up first: expected

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output to the gateway's own log lines

        return Handler


class ClosedPort:
    """An address nothing listens on: bound (so no one else takes it) but never listening, so a
    connection is refused at once, which is what a stopped service looks like."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._socket.close()
