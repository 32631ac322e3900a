"""Event lag: how long after a product's 201 its creator's points are visible, locally.

``python -m tools.bench_events`` (part of ``make bench``) starts the system on free ports with
``LocalSystem`` (the code ``make run`` runs: DynamoDB Local, moto's EventBridge and SQS, the
event workers), registers ``--clients`` users, and has each add ``--adds / --clients`` products
through the gateway one after another. After each 201 the client polls ``GET /users/{name}``
through the gateway until the points include that product, and records the time from the 201 to
then: the whole path (stream, relay, PutEvents, rule, queue, consumer, transaction) as a client
sees it. It prints p50, p99 and the maximum, then waits for the queues to settle and checks
that every user has exactly ``POINTS_PER_PRODUCT`` times their products: none lost, none
doubled.

Then a burst (``--burst`` adds by ``--burst-clients`` users at once, each adding one after
another as fast as the answers come): how long the adds
took, and how long after the last 201 every point was visible, so the rate at which the events
of a burst are applied (the consumer's queue is the backlog; measured at about 30 a second while
moto's SQS receive grew with the queue, see ``tools/motoserver.py``).

Numbers, not assertions: not part of ``make test``. The poll interval bounds the resolution.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from tools import services
from tools.localrun import HOST, LocalSystem, Ports

ADDS = 200
CLIENTS = 4
POLL_SECONDS = 0.02
LAG_LIMIT_SECONDS = 30.0  # an add whose points never show is counted as lost, not waited for
SETTLE_SECONDS = 3.0
BURST_ADDS = 2000
BURST_CLIENTS = 20
DRAIN_POLL_SECONDS = 0.5
DRAIN_LIMIT_SECONDS = 300.0
PASSWORD = "bench-password-1234"  # noqa: S105 (a throwaway user on a throwaway system)


def points_per_product() -> int:
    return int(services.USER.stage_env("local").get("POINTS_PER_PRODUCT", "10"))


class Client:
    """One keep-alive connection to the gateway, reopened if the server closes it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn = http.client.HTTPConnection(HOST, port, timeout=10)

    def call(
        self, method: str, path: str, body: object = None, token: str | None = None
    ) -> tuple[int, object]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = json.dumps(body) if body is not None else None
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else None)
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                self._conn = http.client.HTTPConnection(HOST, self._port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("not reached")


@dataclass
class Run:
    lags: list[float]
    lost: int
    final_points: dict[str, int]
    expected_points: dict[str, int]


class BenchError(RuntimeError):
    """The system answered something the bench cannot measure past (not a number to report)."""


def _expect(status: int, body: object, *, wanted: int, what: str) -> dict:
    if status != wanted or not isinstance(body, dict | None):
        raise BenchError(f"{what}: {status} {body!r}")
    return body or {}


def _user(client: Client) -> tuple[str, str]:
    name = f"lag_{uuid.uuid4().hex[:8]}"
    credentials = {"username": name, "password": PASSWORD}
    _expect(*client.call("POST", "/register_user", credentials), wanted=201, what="register")
    body = _expect(*client.call("POST", "/login_user", credentials), wanted=200, what="login")
    return name, str(body["access_token"])


def _points(client: Client, name: str) -> int:
    body = _expect(*client.call("GET", f"/users/{name}"), wanted=200, what="read the user")
    return int(body["points"])


def one_client(port: int, adds: int, step: int) -> tuple[str, list[float], int]:
    """Add ``adds`` products one at a time; the lag of each, and how many never showed."""
    client = Client(port)
    name, token = _user(client)
    lags: list[float] = []
    lost = 0
    for n in range(1, adds + 1):
        product = {"product_id": f"{name}-{n}", "product_name": f"Bench {n}"}
        _expect(*client.call("POST", "/add_product", product, token), wanted=201, what="add")
        added = time.perf_counter()
        while _points(client, name) < n * step:
            if time.perf_counter() - added > LAG_LIMIT_SECONDS:
                lost += 1
                break
            time.sleep(POLL_SECONDS)
        else:
            lags.append(time.perf_counter() - added)
    return name, lags, lost


def measure(system: LocalSystem, adds: int, clients: int) -> Run:
    step = points_per_product()
    per_client = adds // clients
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(
            pool.map(lambda _: one_client(system.ports.gateway, per_client, step), range(clients))
        )
    time.sleep(SETTLE_SECONDS)  # anything redelivered or doubled would show by now
    check = Client(system.ports.gateway)
    return Run(
        lags=[lag for _, lags, _ in results for lag in lags],
        lost=sum(lost for _, _, lost in results),
        final_points={name: _points(check, name) for name, _, _ in results},
        expected_points={name: per_client * step for name, _, _ in results},
    )


@dataclass
class Burst:
    adds: int
    adds_seconds: float  # from the first add sent to the last 201
    drain_seconds: float  # from the last 201 to every point visible (or the limit)
    applied: int  # events whose points were visible at the end


def burst(system: LocalSystem, adds: int, clients: int) -> Burst:
    """``adds`` products added by ``clients`` users at once (each one add after another), then
    their points waited for."""
    users = [_user(Client(system.ports.gateway)) for _ in range(clients)]
    per_user = adds // clients

    def add_all(user: tuple[str, str]) -> None:
        client, (name, token) = Client(system.ports.gateway), user
        for n in range(per_user):
            product = {"product_id": f"{name}-b{n}", "product_name": f"Burst {n}"}
            _expect(*client.call("POST", "/add_product", product, token), wanted=201, what="add")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(add_all, users))
    added = time.perf_counter()
    step, check = points_per_product(), Client(system.ports.gateway)
    applied = 0
    while time.perf_counter() - added < DRAIN_LIMIT_SECONDS:
        applied = sum(_points(check, name) for name, _ in users) // step
        if applied >= per_user * clients:
            break
        time.sleep(DRAIN_POLL_SECONDS)
    return Burst(per_user * clients, added - started, time.perf_counter() - added, applied)


def render_burst(run: Burst, clients: int) -> str:
    whole = run.adds_seconds + run.drain_seconds
    return "\n".join([
        f"burst: {run.adds} adds at once by {clients} users in {run.adds_seconds:.1f} s "
        f"({run.adds / run.adds_seconds:.0f} writes/s)",
        (f"  every point visible {run.drain_seconds:.1f} s after the last 201"
         if run.applied == run.adds
         else f"  NOT every point visible {run.drain_seconds:.0f} s after the last 201")
        + f" ({run.applied} of {run.adds} events applied; {run.applied / whole:.0f} events/s "
        "from the first add)",
    ])  # fmt: skip


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def render(run: Run, adds: int, clients: int) -> str:
    lines = [f"event lag, 201 to points visible ({adds} adds, {clients} clients in parallel):"]
    if run.lags:
        lines.append(
            f"  p50 {statistics.median(run.lags) * 1000:.0f} ms, "
            f"p99 {_percentile(run.lags, 0.99) * 1000:.0f} ms, "
            f"max {max(run.lags) * 1000:.0f} ms over {len(run.lags)} adds"
        )
    wrong = {
        name: (points, run.expected_points[name])
        for name, points in run.final_points.items()
        if points != run.expected_points[name]
    }
    lines.append(f"  not visible within {LAG_LIMIT_SECONDS:g} s: {run.lost}")
    lines.append(
        "  points after settling: exact for every user (none lost, none doubled)"
        if not wrong
        else f"  points after settling WRONG (got, expected): {wrong}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds", type=int, default=ADDS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--burst", type=int, default=BURST_ADDS, help="adds of the burst (0: none)")
    parser.add_argument("--burst-clients", type=int, default=BURST_CLIENTS)
    args = parser.parse_args(argv)
    print("starting the local system on free ports for the event lag bench...", flush=True)
    with LocalSystem(Ports.free()) as system:
        run = measure(system, args.adds, args.clients)
        print(render(run, args.adds, args.clients), flush=True)
        clients = max(args.burst_clients, 1)
        burst_run = burst(system, args.burst, clients) if args.burst >= clients else None
    if burst_run is not None:
        print(render_burst(burst_run, clients))
    ok = run.lost == 0 and run.final_points == run.expected_points
    ok = ok and (burst_run is None or burst_run.applied == burst_run.adds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
