"""An HTTP proxy in front of a DynamoDB endpoint that loses answers on purpose.

``DropProxy(upstream).drop_answer_once("PutItem")`` forwards the next PutItem, lets DynamoDB store
it, reads DynamoDB's answer, and then closes the client's connection instead of passing the answer
on: what a read timeout or a reset connection looks like to botocore, which then retries a
write that was already applied. ``stall("PutItem", seconds, times)`` forwards the next calls and
holds their answers for ``seconds`` (a store too slow for the client's read timeout: the write may
be stored, the client times out); ``throttle("PutItem", times)`` answers the next calls with
DynamoDB's 400 ``ThrottlingException`` without forwarding them, and ``refuse`` with another of
DynamoDB's 400 errors (``TransactionInProgressException``, say). Everything else is forwarded
unchanged.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

TARGET_PREFIX = "DynamoDB_20120810."


def _error(code: str) -> bytes:
    """DynamoDB's JSON body of a 400 error (what botocore parses into the ClientError's code)."""
    return json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": f"refused: {code}"}
    ).encode()


class DropProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._drops: dict[str, int] = {}
        self._stalls: dict[str, list[tuple[float, str | None, bool]]] = {}
        self._refusals: dict[str, list[str]] = {}  # operation -> the codes of its next answers
        self.dropped: list[str] = []
        self.throttled: list[str] = []
        self.forwarded: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # DynamoDB's protocol is POST only
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                operation = self.headers.get("X-Amz-Target", "").removeprefix(TARGET_PREFIX)
                if (code := proxy._take_refusal(operation)) is not None:
                    proxy.throttled.append(operation)
                    content = [("Content-Type", "application/x-amz-json-1.0")]
                    self._answer(400, content, _error(code))
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=10)
                try:
                    conn.request("POST", self.path, body=body, headers=dict(self.headers))
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                proxy.forwarded.append(operation)
                if proxy._take_drop(operation):
                    # Stored upstream; the caller never hears it.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                table = json.loads(body or b"{}").get("TableName")
                applied = answer.status == 200
                if (held := proxy._take_stall(operation, table, applied)) is not None:
                    time.sleep(held)  # the client has given up by now; its write is stored
                try:
                    self._answer(answer.status, answer.getheaders(), data)
                except OSError:
                    self.close_connection = True  # the client hung up meanwhile

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test asserts on ``forwarded`` and ``dropped``."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def drop_answer_once(self, operation: str) -> None:
        with self._lock:
            self._drops[operation] = self._drops.get(operation, 0) + 1

    def stall(
        self, operation: str, seconds: float, times: int = 1, table: str | None = None,
        applied_only: bool = False,
    ) -> None:  # fmt: skip
        """Hold the answers of the next ``times`` calls (on ``table`` only, when given; of
        calls that DynamoDB applied only, when ``applied_only``: a refused one goes through)."""
        with self._lock:
            entry = (seconds, table, applied_only)
            self._stalls.setdefault(operation, []).extend([entry] * times)

    def throttle(self, operation: str, times: int = 1) -> None:
        self.refuse(operation, "ThrottlingException", times)

    def refuse(self, operation: str, code: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` answered with DynamoDB's 400 ``code``, not
        forwarded (each counted in ``throttled``)."""
        with self._lock:
            self._refusals.setdefault(operation, []).extend([code] * times)

    def _take_refusal(self, operation: str) -> str | None:
        with self._lock:
            pending = self._refusals.get(operation)
            return pending.pop(0) if pending else None

    def _take_stall(self, operation: str, table: str | None, applied: bool) -> float | None:
        with self._lock:
            pending = self._stalls.get(operation) or []
            for index, (seconds, wanted, applied_only) in enumerate(pending):
                if wanted in (None, table) and (applied or not applied_only):
                    del pending[index]
                    return seconds
            return None

    def _take_drop(self, operation: str) -> bool:
        with self._lock:
            if self._drops.get(operation, 0) <= 0:
                return False
            self._drops[operation] -= 1
            self.dropped.append(operation)
            return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
