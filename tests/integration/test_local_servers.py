"""The local servers under real clients: keep-alive connections stay open across requests, a
burst of simultaneous new connections is served in full, and plain ``chalice local`` still works.

Why the devserver is faster (``TCP_NODELAY``, a listen backlog of 128) is checked as socket facts
in ``tests/tools/test_devserver.py``; how much faster is measured by ``make bench``. Nothing here
asserts a duration.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.client
import signal
import threading
from urllib.parse import urlsplit

import pytest

from tests.support.system import get, wait_until
from tools import services
from tools.bench_local import STOCK_CHALICE
from tools.localrun import Child, LocalSystem, free_ports

pytestmark = pytest.mark.integration

BURST_CLIENTS = 64
REQUESTS_PER_CLIENT = 3


def _connection(base_url: str) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


@pytest.mark.parametrize("service", ["user_api", "product_api", "gateway"])
def test_keep_alive_connections_serve_many_requests(
    service: str, request: pytest.FixtureRequest
) -> None:
    base_url = request.getfixturevalue(service)
    conn = _connection(base_url)
    try:
        conn.connect()
        local_port = conn.sock.getsockname()[1]
        for _ in range(30):
            conn.request("GET", "/health" if service != "gateway" else "/greet/Ada")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert not response.will_close, "the server closed a keep-alive connection"
        assert conn.sock.getsockname()[1] == local_port, "a new connection was opened"
    finally:
        conn.close()


def test_a_burst_of_new_connections_is_served(user_api: str) -> None:
    """Every one of a burst of simultaneous clients is connected and answered, none reset."""
    ready = threading.Barrier(BURST_CLIENTS)

    def client() -> list[int]:
        conn = _connection(user_api)
        ready.wait(timeout=10)
        try:
            conn.connect()  # all at the same moment
            statuses = []
            for _ in range(REQUESTS_PER_CLIENT):
                conn.request("GET", "/health")
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            return statuses
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=BURST_CLIENTS) as pool:
        futures = [pool.submit(client) for _ in range(BURST_CLIENTS)]
        results = [future.result(timeout=30) for future in futures]

    assert results == [[200] * REQUESTS_PER_CLIENT] * BURST_CLIENTS


def test_plain_chalice_local_still_serves_each_app(system: LocalSystem) -> None:
    """The devserver is an addition: ``chalice local --stage local`` in each app folder must
    keep working, against the same DynamoDB endpoint (the environment ``--print-env`` gives).
    The gateway is asked for a route it answers itself, since its stage config names 5001/5002."""
    checks = {
        services.USER: "/users?limit=1",
        services.PRODUCT: "/get_products?limit=1",
        services.GATEWAY: "/greet/Chalice",
    }
    ports = dict(zip(checks, free_ports(len(checks)), strict=True))
    children = [
        Child(
            f"stock_{svc.name}",
            [
                system.python, "-c", STOCK_CHALICE, "--project-dir", str(svc.directory),
                "local", "--stage", "local", "--port", str(port), "--no-autoreload",
            ],
            system.child_env(),
        )
        for svc, port in ports.items()
    ]  # fmt: skip
    try:
        for (svc, path), child in zip(checks.items(), children, strict=True):
            base = f"http://127.0.0.1:{ports[svc]}"
            reply = wait_until(functools.partial(get, base, path), timeout=30)
            assert reply.status == 200, f"{svc.name}: {reply}\n{child.tail()}"
    finally:
        for child in children:
            child.stop()



@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_devserver_applies_overrides_over_the_stage_and_exits_0_on_signal(
    system: LocalSystem, signum: int
) -> None:
    """``--set`` must beat the stage config (which sets ``LOG_LEVEL=INFO``) and be in place
    before the app is imported (its logger reads the level then); a signal ends it cleanly."""
    port = free_ports(1)[0]
    child = Child(
        "devserver",
        [
            system.python, "-m", "tools.devserver", "--project-dir", str(services.USER.directory),
            "--port", str(port), "--set", "LOG_LEVEL=WARNING",
        ],
        system.child_env(),
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_until(functools.partial(get, base, "/health"), timeout=30).status == 200
        assert get(base, "/users/nobody_at_all").status == 404
    finally:
        child.signal_group(signum)
        code = child.wait(10)
        child.finish()
    assert code == 0, child.tail()
    # The process has exited, so everything it wrote has been read: at WARNING the app logged no
    # INFO request line, though it served a request (at the stage's INFO it would have).
    assert any("Serving user_api" in line for line in child.lines()), child.tail()
    assert not [line for line in child.lines() if '"message":"request"' in line], child.tail()
