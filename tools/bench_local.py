"""Local latency and throughput: stock ``chalice local`` against ``tools.devserver``.

``python -m tools.bench_local`` (part of ``make bench``) starts the
system on free ports with ``LocalSystem`` plus one stock ``chalice local --no-autoreload`` for
user_api beside it, on the same moto endpoint, and measures with a bounded number of requests:

* keep-alive latency per request (median, p95) on one connection, for ``GET /health`` (no I/O,
  so the server's own overhead) and ``GET /users?limit=10`` (one DynamoDB Scan);
* throughput with ``--clients`` concurrent keep-alive clients on ``GET /health``, and how many
  of them failed to connect or were reset (the listen backlog);
* the gateway's added latency: ``GET /get_products?limit=10`` direct on product_api and the same
  route through the gateway, both on the devserver, and the difference of the medians.

Why it exists: the issue's claim (stock ~44 ms a request because of Nagle's algorithm and the
client's delayed ACK, a backlog of 5 that resets bursts) should be re-measurable on any machine
with one command rather than believed. Not part of ``make test``: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tools import services
from tools.localrun import HOST, Child, LocalSystem, Ports, free_port, http_status

STOCK_CHALICE = "import sys; from chalice.cli import main; sys.exit(main())"
STARTUP_SECONDS = 45.0


@dataclass(frozen=True)
class Latency:
    label: str
    requests: int
    median_ms: float
    p95_ms: float


@dataclass(frozen=True)
class Throughput:
    label: str
    clients: int
    requests: int
    errors: int
    seconds: float
    slowest_connect_ms: float  # >= 1000 means a SYN was dropped: the listen queue overflowed

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def keep_alive_latency(label: str, port: int, path: str, requests: int) -> Latency:
    """``requests`` sequential GETs on one connection, after one warm-up request."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    timings: list[float] = []
    try:
        for index in range(requests + 1):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{label}: GET {path} answered {response.status}")
            if index:  # the first one pays for the connection and lazy imports
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return Latency(label, requests, statistics.median(timings), _percentile(timings, 0.95))


def throughput(label: str, port: int, path: str, clients: int, per_client: int) -> Throughput:
    """``clients`` threads, each on its own keep-alive connection, all starting together."""
    ready = threading.Barrier(clients)

    def client() -> tuple[int, int, float]:
        done = errors = 0
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        ready.wait(timeout=30)
        connect_started = time.perf_counter()
        try:
            conn.connect()
        except OSError:
            errors += 1
        connect_ms = (time.perf_counter() - connect_started) * 1000
        try:
            for _ in range(per_client):
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    done += response.status == 200
                    errors += response.status != 200
                except (OSError, http.client.HTTPException):
                    errors += 1
                    conn.close()  # reconnect on the next request, as a real client would
        finally:
            conn.close()
        return done, errors, connect_ms

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda _: client(), range(clients), timeout=120))
    seconds = time.perf_counter() - started
    return Throughput(
        label,
        clients,
        sum(done for done, _, _ in results),
        sum(errors for _, errors, _ in results),
        seconds,
        max(connect_ms for _, _, connect_ms in results),
    )


def start_stock_user_api(system: LocalSystem, port: int) -> Child:
    """Plain ``chalice local`` for user_api on the system's DynamoDB endpoint."""
    argv = [
        system.python, "-c", STOCK_CHALICE,
        "--project-dir", str(services.USER.directory),
        "local", "--stage", system.stage, "--host", HOST, "--port", str(port), "--no-autoreload",
    ]  # fmt: skip
    child = Child("stock_user_api", argv, system.child_env())
    deadline = time.monotonic() + STARTUP_SECONDS
    while http_status(HOST, port) != 200:
        if not child.running or time.monotonic() > deadline:
            child.stop()
            raise RuntimeError(f"stock chalice local did not start:\n{child.tail()}")
        time.sleep(0.05)
    return child


def run(requests: int, clients: int, per_client: int) -> tuple[list[Latency], list[Throughput]]:
    """Start everything, measure, stop everything; the numbers only."""
    system = LocalSystem(Ports.free())
    system.start()
    stock: Child | None = None
    try:
        stock_port = free_port()
        stock = start_stock_user_api(system, stock_port)
        ours = system.ports.user
        route = "/users?limit=10"
        stock_label, our_label = "stock chalice local ", "tools.devserver     "
        latencies = [
            keep_alive_latency(f"{stock_label} GET /health", stock_port, "/health", requests),
            keep_alive_latency(f"{our_label} GET /health", ours, "/health", requests),
            keep_alive_latency(f"{stock_label} GET {route}", stock_port, route, requests // 2),
            keep_alive_latency(f"{our_label} GET {route}", ours, route, requests // 2),
            # The same route direct and through the gateway: the difference is what the gateway
            # adds (token-free read, one pooled keep-alive hop).
            keep_alive_latency(
                "product_api direct   GET /get_products?limit=10",
                system.ports.product,
                "/get_products?limit=10",
                requests // 2,
            ),
            keep_alive_latency(
                "via gateway_api      GET /get_products?limit=10",
                system.ports.gateway,
                "/get_products?limit=10",
                requests // 2,
            ),
        ]
        rates = [
            throughput(f"{label} GET /health", port, "/health", clients, per_client)
            for label, port in ((stock_label, stock_port), (our_label, ours))
        ]
    finally:
        if stock is not None:
            stock.stop()
        system.stop()
    return latencies, rates


def render(latencies: Sequence[Latency], rates: Sequence[Throughput]) -> str:
    width = max(len(row.label) for row in [*latencies, *rates])
    title = "keep-alive latency (one connection)"
    lines = [f"{title:<{width}}  {'n':>5}  {'median ms':>9}  {'p95 ms':>8}"]
    lines += [
        f"{row.label:<{width}}  {row.requests:>5}  {row.median_ms:>9.2f}  {row.p95_ms:>8.2f}"
        for row in latencies
    ]
    direct = next((r for r in latencies if r.label.startswith("product_api direct")), None)
    gateway = next((r for r in latencies if r.label.startswith("via gateway_api")), None)
    if direct and gateway:
        added = gateway.median_ms - direct.median_ms
        lines.append(
            f"{'gateway added latency (median difference)':<{width}}  {'':>5}  {added:>9.2f}"
        )
    lines += [
        "",
        f"{'throughput (concurrent keep-alive clients)':<{width}}  {'clients':>7}  {'ok':>5}  "
        f"{'errors':>6}  {'req/s':>7}  {'slowest connect ms':>18}",
    ]
    lines += [
        f"{row.label:<{width}}  {row.clients:>7}  {row.requests:>5}  {row.errors:>6}  "
        f"{row.per_second:>7.0f}  {row.slowest_connect_ms:>18.1f}"
        for row in rates
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table. ``argv=None`` means the defaults, not
    ``sys.argv``: ``tools.bench`` calls this from its own command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_local", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=100, help="latency samples per row")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--per-client", type=int, default=25, help="requests per client")
    args = parser.parse_args(list(argv or []))
    started = time.monotonic()
    print("starting moto, the three devservers and a stock chalice local ...", flush=True)
    latencies, rates = run(max(args.requests, 2), max(args.clients, 1), max(args.per_client, 1))
    print(render(latencies, rates))
    print(f"(total {time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
