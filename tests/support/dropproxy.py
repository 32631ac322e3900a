"""An HTTP proxy in front of a DynamoDB endpoint that loses answers on purpose.

``DropProxy(upstream).drop_answer_once("PutItem")`` forwards the next PutItem, lets DynamoDB store
it, reads DynamoDB's answer, and then closes the client's connection instead of passing the answer
on: what a read timeout or a reset connection looks like to botocore, which then retries a
write that was already applied. Everything else is forwarded unchanged.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

TARGET_PREFIX = "DynamoDB_20120810."


class DropProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._drops: dict[str, int] = {}
        self.dropped: list[str] = []
        self.forwarded: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # DynamoDB's protocol is POST only
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                operation = self.headers.get("X-Amz-Target", "").removeprefix(TARGET_PREFIX)
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
                self.send_response(answer.status)
                for name, value in answer.getheaders():
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
