"""The data check after a load: what clients were told must be what the store holds.

* Every product answered 201 and not deleted by the load reads back (``GET /products/{id}``
  200, with its creator as ``created_by``); one the load deleted with a 204 reads 404.
* A write whose answer was not 201 (a 502, a timeout, a user stopped mid-request) may or may
  not have been stored: the store says which, and the check reports how many of those the
  client was told had failed although they were stored (issue 14's first finding).
* After the events settle (polled, bounded), each user's points are ``POINTS_PER_PRODUCT`` x the
  products that user stored: deletes take no points back.

Why through the gateway, like the load: it is the contract clients have. Standard library
only; bounded in time and threads; 127.0.0.1 only (the runner checks the target).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from tools.load.ledger import (
    CREATED,
    DELETE_UNKNOWN,
    DELETED,
    STORED,
    UNKNOWN,
    Ledger,
)

READERS = 8  # concurrent GETs of the check: quick, without being a load of its own
SETTLE_SECONDS = 120.0
POLL_SECONDS = 1.0


@dataclass
class CheckResult:
    """Problems make the check fail; notes are what a reader should know either way."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        head = "data check: PASSED" if self.ok else f"data check: FAILED ({len(self.problems)})"
        return "\n".join(
            [head, *(f"  {n}" for n in self.notes), *(f"  ! {p}" for p in self.problems)]
        )


def get_json(base_url: str, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    """One GET on its own connection; (status, decoded JSON or None)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
    )
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(body) if body else None
    except ValueError:
        return response.status, None


def _read_all(base_url: str, paths: Iterable[str]) -> dict[str, tuple[int, Any]]:
    def one(path: str) -> tuple[int, Any]:
        try:
            return get_json(base_url, path)
        except (OSError, http.client.HTTPException) as exc:
            return 0, repr(exc)

    wanted = list(paths)
    with concurrent.futures.ThreadPoolExecutor(max_workers=READERS) as pool:
        return dict(zip(wanted, pool.map(one, wanted), strict=True))


def check(
    base_url: str,
    ledger: Ledger,
    points_per_product: int,
    settle_seconds: float = SETTLE_SECONDS,
    say: Callable[[str], None] = print,
) -> CheckResult:
    """Products first (they decide what each user is owed), then the points, polled."""
    result = CheckResult()
    paths = {pid: f"/products/{quote(pid, safe='')}" for pid in ledger.products}
    say(f"data check: reading back {len(paths)} products ...")
    reads = _read_all(base_url, paths.values())
    stored: Counter[str] = Counter()
    states = Counter(entry["state"] for entry in ledger.products.values())
    unknown_stored = unknown_absent = 0
    for pid, entry in ledger.products.items():
        state, user = entry["state"], entry["user"]
        status, body = reads[paths[pid]]
        if state == UNKNOWN:
            if status == 200:
                unknown_stored += 1
                stored[user] += 1
            elif status == 404:
                unknown_absent += 1
            else:
                result.problems.append(f"{pid} (outcome unknown): GET answered {status}")
            continue
        if state in STORED:
            stored[user] += 1
        if state == CREATED:
            if status != 200:
                result.problems.append(f"{pid} was answered 201 but GET answers {status}")
            elif (body or {}).get("created_by") != user:
                result.problems.append(f"{pid} was added by {user}, reads {body!r}")
        elif state == DELETED and status != 404:
            result.problems.append(f"{pid} was deleted (204) but GET answers {status}")
        elif state == DELETE_UNKNOWN and status not in (200, 404):
            result.problems.append(f"{pid} (delete outcome unknown): GET answered {status}")
    result.notes.append(
        "products: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
    )
    if unknown_stored or unknown_absent:
        result.notes.append(
            f"writes not answered 201: {unknown_stored} stored anyway (the client was told "
            f"they failed), {unknown_absent} not stored"
        )
    registered = [u for u, ok in ledger.users.items() if ok]
    unregistered = len(ledger.users) - len(registered)
    result.notes.append(
        f"users: {len(registered)} registered"
        + (f", {unregistered} refused" if unregistered else "")
    )
    owed = {user: points_per_product * stored[user] for user in registered}
    result.problems += _settled_points(base_url, owed, settle_seconds, say, result)
    return result


def _settled_points(
    base_url: str,
    owed: dict[str, int],
    settle_seconds: float,
    say: Callable[[str], None],
    result: CheckResult,
) -> list[str]:
    """Poll every user not yet at their points until all are, one overshoots (points never go
    down, so that cannot settle) or the time is up."""
    say(
        f"data check: waiting for {len(owed)} users' points to settle "
        f"(at most {settle_seconds:.0f} s) ..."
    )
    started = time.monotonic()
    deadline = started + settle_seconds
    seen: dict[str, Any] = {}
    waiting = dict(owed)
    while waiting:
        reads = _read_all(base_url, (f"/users/{quote(u, safe='')}" for u in waiting))
        for user in list(waiting):
            status, body = reads[f"/users/{quote(user, safe='')}"]
            seen[user] = (body or {}).get("points") if status == 200 else f"HTTP {status}"
            if seen[user] == waiting[user]:
                del waiting[user]
        over = [u for u in waiting if isinstance(seen[u], int) and seen[u] > waiting[u]]
        if over or not waiting or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    settled = time.monotonic() - started
    total = sum(owed.values())
    if not waiting:
        result.notes.append(
            f"points: all {len(owed)} users exact ({total} points) after {settled:.1f} s"
        )
        return []
    return [
        f"{user}: points {seen.get(user)!r}, owed {points} (after {settled:.1f} s)"
        for user, points in sorted(waiting.items())
    ]
