"""HTTP helpers for tests that talk to real processes (``tests/integration``).

Plain ``http.client``, one connection per call: the integration tests check what goes over the
wire (status, headers such as ``Link`` and ``X-Request-Id``, the body), so nothing between the
test and the server may retry, follow redirects or pool connections behind the test's back.
The processes themselves come from ``tools.localrun.LocalSystem``, the code ``make run`` uses.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer as received, plus how long it took."""

    status: int
    headers: Mapping[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def __str__(self) -> str:  # what an assertion message shows
        return f"{self.status} {dict(self.headers)} {self.body[:500]!r}"


def call(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """Send one request on a fresh connection; ``body`` other than bytes/str is sent as JSON.
    ``path`` is taken below ``base_url``'s own path (a deployed API's stage prefix)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    sent_headers = dict(headers or {})
    payload: bytes | None
    if body is None:
        payload = None
    elif isinstance(body, bytes):
        payload = body
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = json.dumps(body).encode()
        sent_headers = {**JSON_HEADERS, **sent_headers}
    started = time.perf_counter()
    try:
        conn.request(method, parts.path.rstrip("/") + path, body=payload, headers=sent_headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    received: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        received[key] = f"{received[key]}, {value}" if key in received else value
    return Reply(response.status, received, data, time.perf_counter() - started)


def get(base_url: str, path: str, headers: Mapping[str, str] | None = None) -> Reply:
    return call(base_url, "GET", path, headers=headers)


def post(base_url: str, path: str, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return call(base_url, "POST", path, body=body, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_until(probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy, at most ``timeout`` seconds; the last
    value (or exception) is reported if it never does. For state that settles asynchronously
    (a restarted process, a log line on its way through a pipe), never for timing."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s; last: {last}")
        time.sleep(interval)


S = TypeVar("S")
R = TypeVar("R")


def all_at_once(
    base_url: str,
    items: Sequence[S],
    send: Callable[[http.client.HTTPConnection, S], R],
    timeout: float,
) -> list[R]:
    """``send(connection, item)`` for every item, each on its own connection, all released
    together once every connection is open: requests that truly overlap at the server, which
    is what a race or a burst needs (threads that connect as they go arrive spread out)."""
    parts = urlsplit(base_url)
    ready = threading.Barrier(len(items))

    def one(item: S) -> R:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.connect()
            ready.wait(timeout=timeout)
            return send(conn, item)
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(one, items, timeout=timeout * 5))
