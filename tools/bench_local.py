"""Local latency and throughput: stock ``chalice local`` against ``tools.devserver``.

``python -m tools.bench_local`` (part of ``make bench``) starts the
system on free ports with ``LocalSystem`` plus one stock ``chalice local --no-autoreload`` for
user_api beside it, on the same moto endpoint, and measures with a bounded number of requests:

* keep-alive latency per request (median, p95) on one connection, for ``GET /health`` (no I/O,
  so the server's own overhead) and ``GET /users?limit=10`` (one DynamoDB Scan);
* throughput with ``--clients`` concurrent keep-alive clients on ``GET /health``, and how many
  of them failed to connect or were reset (the listen backlog);
* the gateway's added latency: ``GET /get_products?limit=10`` direct on product_api and the same
  route through the gateway, both on the devserver, and the difference of the medians;
* against the naive design (``../shared/peer_flask``: three Flask apps, in-memory dicts, a
  gateway that opens a connection per call), side by side in the same run: each system holds
  the same 100 products (ours added through the gateway by a registered, logged-in user, the
  peer's through its ``/add_product``), then ``GET /get_products`` takes ``--load-clients``
  keep-alive clients for ``--load-seconds`` each, through each gateway and direct on each
  product service: req/s, p50 and p99, the ratios ours/peer, and product_api's CPU
  milliseconds per request (``utime + stime`` from ``/proc/<pid>/stat`` around the load).

The peer runs from its own virtualenv (``.local/peer-venv``, Flask and requests pinned below,
made on first use); without the ``shared/peer_flask`` folder beside the checkout the comparison
says so and measures ours alone.

Why it exists: the issue's claims (stock ~44 ms a request because of Nagle's algorithm and the
client's delayed ACK, a backlog of 5 that resets bursts; a list route slower than the naive
design) should be re-measurable on any machine with one command rather than believed. Every
request loop is bounded in count and time and talks to 127.0.0.1 only. Not part of
``make test``: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import services
from tools.local import dynamodb
from tools.localrun import (
    HOST,
    Child,
    LocalSystem,
    Ports,
    free_port,
    http_status,
)

STOCK_CHALICE = "import sys; from chalice.cli import main; sys.exit(main())"
STARTUP_SECONDS = 45.0

# The naive design the issue compares against, and the virtualenv it runs from.
PEER_DIR = services.ROOT.parent / "shared" / "peer_flask"
PEER_VENV = services.LOCAL_DIR / "peer-venv"
PEER_REQUIREMENTS = ("flask==3.1.3", "requests==2.34.2")
PEER_SETUP_SECONDS = 300.0
LIST_PATH = "/get_products"
PRODUCTS = 100
LOAD_CLIENTS = 8
LOAD_SECONDS = 10.0
WARM_UP_SECONDS = 1.0
# A second bound besides the clock, so no loop can run away even against a server that answers
# instantly: far above what loopback HTTP on two cores reaches in LOAD_SECONDS.
MAX_REQUESTS_PER_CLIENT = 100_000
BENCH_USER = {"username": "bench_user", "password": "bench-password-1234"}


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


@dataclass(frozen=True)
class Load:
    """One system's ``GET /get_products`` under a fixed number of keep-alive clients."""

    system: str  # "ours" or "peer"
    route: str  # "through gateway" or "direct"
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None  # the product service's process; None where unknown
    # The machine's 1-minute load average after the row: two cores shared with other work make
    # the numbers move, and this says how busy the machine was.
    load_average: float | None = None

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


def run(
    requests: int,
    clients: int,
    per_client: int,
    load_clients: int = LOAD_CLIENTS,
    load_seconds: float = LOAD_SECONDS,
    say: Callable[[str], None] = print,
    data_dir: Path | None = None,
    settle_seconds: float = 0.0,
) -> tuple[list[Latency], list[Throughput], list[Load]]:
    """Start everything, measure, stop everything; the numbers only. ``data_dir``: the
    engine's tables on disk there (what ``make run`` keeps), so the start is a restart of a
    system holding that data; else in memory, as the integration tests use. ``settle_seconds``
    idle before measuring: the same data measured right after its restart and once settled
    tells what the restart itself costs, apart from what the data's size costs."""
    engine = dynamodb.choose({}, data_dir=data_dir) if data_dir else None
    system = LocalSystem(Ports.free(), engine=engine)
    system.start()
    say(f"DynamoDB: {_engine_name(system)} at {system.dynamodb_endpoint}")
    if settle_seconds > 0:
        say(f"settling for {settle_seconds:g} s before measuring")
        time.sleep(settle_seconds)
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
        stock.stop()
        stock = None
        loads = compare_with_peer(system, load_clients, load_seconds, say)
    finally:
        if stock is not None:
            stock.stop()
        system.stop()
    return latencies, rates, loads


def _engine_name(system: LocalSystem) -> str:
    engine = getattr(system, "engine", None)
    return getattr(engine, "name", None) or "external endpoint"


# --- ours against the naive design -----------------------------------------------------------


def _call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    conn.request(
        method,
        path,
        body=json.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    response = conn.getresponse()
    return response.status, response.read()


def _product(index: int) -> dict[str, str]:
    """The same product in both systems: the fields the peer keeps (it drops any others)."""
    return {"product_id": f"bench-{index:03d}", "product_name": f"Product {index}"}


def load_ours(gateway_port: int, count: int) -> None:
    """``count`` products through our gateway, as API.md's walk-through adds one: register,
    log in, then ``POST /add_product`` with the token. A name or id already there (an endpoint
    kept from an earlier run) is fine."""
    conn = http.client.HTTPConnection(HOST, gateway_port, timeout=30)
    try:
        status, _ = _call(conn, "POST", "/register_user", BENCH_USER)
        if status not in (201, 409):
            raise RuntimeError(f"register_user answered {status}")
        status, body = _call(conn, "POST", "/login_user", BENCH_USER)
        if status != 200:
            raise RuntimeError(f"login_user answered {status}")
        auth = {"Authorization": f"Bearer {json.loads(body)['access_token']}"}
        for index in range(count):
            status, _ = _call(conn, "POST", "/add_product", _product(index), auth)
            if status not in (201, 409):
                raise RuntimeError(f"add_product answered {status}")
    finally:
        conn.close()


def load_peer(gateway_port: int, count: int) -> None:
    """``count`` products through the peer's gateway (it has no users or tokens on this route)."""
    conn = http.client.HTTPConnection(HOST, gateway_port, timeout=30)
    try:
        for index in range(count):
            status, _ = _call(conn, "POST", "/add_product", _product(index))
            if status != 201:
                raise RuntimeError(f"the peer's add_product answered {status}")
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid`` so far, from ``/proc``; None where there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may itself hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def timed_load(
    system: str,
    route: str,
    port: int,
    path: str,
    clients: int,
    seconds: float,
    cpu_pid: int | None = None,
) -> Load:
    """``clients`` threads, each on one keep-alive connection, sending ``GET path`` for
    ``seconds`` (and at most MAX_REQUESTS_PER_CLIENT each); every latency kept."""
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client() -> tuple[list[float], int]:
        timings: list[float] = []
        errors = 0
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        ready.wait(timeout=30)
        try:
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                started = time.perf_counter()
                if started >= deadline[0]:
                    break
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    errors += 1
                    conn.close()  # reconnect on the next request, as a real client would
                    continue
                if response.status == 200:
                    timings.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1
        finally:
            conn.close()
        return timings, errors

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        cpu_before = cpu_seconds(cpu_pid) if cpu_pid else None
        deadline[0] = time.perf_counter() + seconds
        started = time.perf_counter()
        ready.wait(timeout=30)
        results = [f.result(timeout=seconds + 60) for f in futures]
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(cpu_pid) if cpu_pid else None
    timings = [t for client_timings, _ in results for t in client_timings]
    errors = sum(e for _, e in results)
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and timings:
        cpu_ms = (cpu_after - cpu_before) * 1000 / len(timings)
    return Load(
        system,
        route,
        clients,
        len(timings),
        errors,
        elapsed,
        _percentile(timings, 0.50) if timings else 0.0,
        _percentile(timings, 0.99) if timings else 0.0,
        cpu_ms,
        os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    )


def _peer_venv_stamp() -> Path:
    digest = hashlib.sha1("\n".join(PEER_REQUIREMENTS).encode()).hexdigest()[:12]  # noqa: S324
    return PEER_VENV / f".installed-{digest}"


def peer_python(say: Callable[[str], None] = print) -> Path:
    """The peer's interpreter: a virtualenv of its own with Flask and requests at pinned
    versions, made (or brought to these pins) once, so the project's ``.venv`` never gets them
    from here."""
    python = PEER_VENV / "bin" / "python"
    stamp = _peer_venv_stamp()
    if python.exists() and stamp.exists():
        return python
    say(f"making the peer's virtualenv in {PEER_VENV} ({', '.join(PEER_REQUIREMENTS)}) ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *PEER_REQUIREMENTS],
        check=True,
        timeout=PEER_SETUP_SECONDS,
    )  # fmt: skip
    for old in PEER_VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return python


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes local ports of outgoing connections from."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _three_free_ports() -> int:
    """A base port whose next two are free as well: the peer's launcher takes BASE..BASE+2.

    Below the ephemeral range: there the ports next to a free one are handed to our own
    outgoing connections (the readiness probes), and the peer's second app then cannot bind.
    """
    low, _ = _ephemeral_ports()
    for base in range(low - 3, 1024, -3):
        if all(_bindable(base + n) for n in range(3)):
            return base
    raise RuntimeError("found no three consecutive free ports for the peer")


def _process_of_group(group: int, script: str) -> int | None:
    """The pid of the process in ``group`` running ``script`` (the peer's product service is a
    child of its launcher), so its CPU can be read like product_api's."""
    wanted = script.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getpgid(int(entry.name)) == group and any(a.endswith(wanted) for a in argv):
                return int(entry.name)
    return None


@contextlib.contextmanager
def running_peer(python: Path) -> Iterator[tuple[int, int, int | None]]:
    """The peer's three apps on free ports: yields (gateway port, product port, product pid).
    Its launcher leads its own process group, so stopping the group stops all three."""
    base = _three_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLASK_"))}
    child = Child(
        "peer", [str(python), str(PEER_DIR / "launch.py"), "--base-port", str(base)], env,
        cwd=PEER_DIR,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while any(http_status(HOST, base + n, LIST_PATH) != 200 for n in (0, 2)):
            if not child.running or time.monotonic() > deadline:
                raise RuntimeError(f"the peer did not start:\n{child.tail()}")
            time.sleep(0.1)
        yield base, base + 2, _process_of_group(child.pid, "product_service.py")
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        raise RuntimeError(f"the peer failed: {exc!r}\n{child.tail()}") from exc
    finally:
        child.stop()


def compare_with_peer(
    system: LocalSystem, clients: int, seconds: float, say: Callable[[str], None] = print
) -> list[Load]:
    """``GET /get_products`` on ours and on the peer, through each gateway and direct, the two
    systems alternating so that a machine that gets busier part-way hits both alike."""
    say(f"adding {PRODUCTS} products to ours through the gateway ...")
    load_ours(system.ports.gateway, PRODUCTS)
    product_pid = system.children[services.PRODUCT.name].pid
    ours = {
        "through gateway": (system.ports.gateway, product_pid),
        "direct": (system.ports.product, product_pid),
    }
    if not PEER_DIR.is_dir():
        say(f"peer comparison skipped: {PEER_DIR} does not exist (measuring ours alone)")
        return [_measure("ours", route, *where, clients, seconds) for route, where in ours.items()]
    with running_peer(peer_python(say)) as (peer_gateway, peer_product, peer_pid):
        say(f"adding {PRODUCTS} products to the peer through its gateway ...")
        load_peer(peer_gateway, PRODUCTS)
        peer = {"through gateway": (peer_gateway, peer_pid), "direct": (peer_product, peer_pid)}
        loads = []
        for route in ours:
            loads.append(_measure("ours", route, *ours[route], clients, seconds))
            loads.append(_measure("peer", route, *peer[route], clients, seconds))
    return loads


def _measure(
    system: str, route: str, port: int, pid: int | None, clients: int, seconds: float
) -> Load:
    # A short unmeasured run first: connections, threads and lazy imports are set up by then.
    timed_load(system, route, port, LIST_PATH, clients, min(WARM_UP_SECONDS, seconds))
    return timed_load(system, route, port, LIST_PATH, clients, seconds, pid)


def render_loads(loads: Sequence[Load]) -> str:
    """Per route: ours, the peer, then ours/peer (above 1 is better for req/s, worse for the
    latencies)."""
    if not loads:
        return ""
    first = loads[0]
    lines = [
        f"GET {LIST_PATH} ({PRODUCTS} products), {first.clients} keep-alive clients, "
        f"{first.seconds:.0f} s each",
        f"{'route':<16}  {'system':<9}  {'ok':>6}  {'errors':>6}  {'req/s':>7}  {'p50 ms':>7}  "
        f"{'p99 ms':>7}  {'product CPU ms/req':>18}  {'load avg':>8}",
    ]
    routes = list(dict.fromkeys(row.route for row in loads))
    for route in routes:
        rows = {row.system: row for row in loads if row.route == route}
        for row in rows.values():
            cpu = f"{row.cpu_ms_per_request:.2f}" if row.cpu_ms_per_request is not None else "n/a"
            busy = f"{row.load_average:.1f}" if row.load_average is not None else "n/a"
            lines.append(
                f"{route:<16}  {row.system:<9}  {row.requests:>6}  {row.errors:>6}  "
                f"{row.per_second:>7.0f}  {row.p50_ms:>7.2f}  {row.p99_ms:>7.2f}  {cpu:>18}  "
                f"{busy:>8}"
            )
        ours, peer = rows.get("ours"), rows.get("peer")
        if ours and peer and peer.per_second and peer.p50_ms and peer.p99_ms:
            lines.append(
                f"{route:<16}  {'ours/peer':<9}  {'':>6}  {'':>6}  "
                f"{ours.per_second / peer.per_second:>6.2f}x  "
                f"{ours.p50_ms / peer.p50_ms:>6.2f}x  {ours.p99_ms / peer.p99_ms:>6.2f}x"
            )
    return "\n".join(lines)


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
    parser.add_argument(
        "--load-clients", type=int, default=LOAD_CLIENTS, help="clients of the peer comparison"
    )
    parser.add_argument(
        "--load-seconds", type=float, default=LOAD_SECONDS, help="seconds per comparison row"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="DynamoDB Local's data there (a restart of that system)"
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=0.0, help="idle this long after the start"
    )
    args = parser.parse_args(list(argv or []))
    started = time.monotonic()
    print("starting DynamoDB, the three devservers and a stock chalice local ...", flush=True)
    latencies, rates, loads = run(
        max(args.requests, 2),
        max(args.clients, 1),
        max(args.per_client, 1),
        max(args.load_clients, 1),
        min(max(args.load_seconds, 1.0), 120.0),
        say=lambda text: print(text, flush=True),
        data_dir=args.data_dir,
        settle_seconds=max(args.settle_seconds, 0.0),
    )
    print(render(latencies, rates))
    if loads:
        print()
        print(render_loads(loads))
    print(f"(total {time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
