"""``make run`` itself, as a developer meets it: ``python -m tools.localrun`` in a terminal.

The other integration tests drive ``LocalSystem`` directly; these run the command on free ports
with its data in a temporary folder, so the parts only the command has are covered: the
``[name]`` prefixes and the banner, data that survives a restart of the runner, supervision
(a killed service comes back, a crash loop is left down alone), hot reload, and every way of
ending (Ctrl-C, SIGTERM, the runner itself SIGKILLed) leaving no listener behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.prometheus import scrape, value
from tests.support.system import bearer, get, post, wait_until
from tools import services
from tools.localrun import Ports, http_status, port_in_use

pytestmark = pytest.mark.integration

READY_SECONDS = 90.0
EXIT_SECONDS = 15.0
BACK_SECONDS = 20.0
PASSWORD = "correct-horse-1234"
_SERVING = re.compile(r"^\[(\w+)\]\s+Serving \w+ \(stage local, pid (\d+)\) on http://")


class Runner:
    """``python -m tools.localrun`` on free ports, its output collected line by line."""

    def __init__(self, data_dir: Path, **env_overrides: str) -> None:
        self.ports = Ports.free()
        env = {
            **os.environ,
            services.GATEWAY.port_env: str(self.ports.gateway),
            services.USER.port_env: str(self.ports.user),
            services.PRODUCT.port_env: str(self.ports.product),
            "DYNAMODB_PORT": str(self.ports.dynamodb),
            "EVENTS_PORT": str(self.ports.events),
            "METRICS_PORT": str(self.ports.metrics),
            "DYNAMODB_DATA_DIR": str(data_dir),
            "RUN_LOG": str(data_dir.parent / "run.log"),
            "NO_COLOR": "1",
            **env_overrides,
        }
        env.pop("DYNAMODB_ENDPOINT", None)
        # Its own session, like a shell's foreground job: the signals below reach only it.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.localrun"],
            cwd=services.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Ctrl-C stops everything" in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> Runner:
        assert self._ready.wait(READY_SECONDS), self.output()
        assert self.process.poll() is None, self.output()
        return self

    def pids(self) -> dict[str, int]:
        """The latest pid each service printed (a restarted service prints its new one)."""
        return {m[1]: int(m[2]) for m in map(_SERVING.match, list(self.lines)) if m}

    def said(self, fragment: str) -> bool:
        return any(fragment in line for line in list(self.lines))

    def ports_in_use(self) -> list[int]:
        every = (
            self.ports.gateway,
            self.ports.user,
            self.ports.product,
            self.ports.dynamodb,
            self.ports.events,
            self.ports.metrics,
        )
        return [port for port in every if port_in_use(port)]

    def wait_exit(self) -> int:
        code = self.process.wait(timeout=EXIT_SECONDS)
        self._reader.join(timeout=5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def start_runner(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """Start runners (sharing one data folder per test); every one is killed at the end."""
    started: list[Runner] = []

    def _start(**env: str) -> Runner:
        runner = Runner(tmp_path / "dynamodb-data", **env)
        started.append(runner)
        return runner.wait_ready()

    yield _start
    for runner in started:
        runner.kill()


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def _register_and_login(gateway: str, name: str) -> str:
    registered = post(gateway, "/register_user", {"username": name, "password": PASSWORD})
    assert registered.status == 201, registered
    login = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert login.status == 200, login
    return str(login.json()["access_token"])


def _walk_through(gateway: str) -> None:
    """API.md's walk-through up to the added product: register, log in, add ``Laptop``."""
    token = _register_and_login(gateway, "john_doe")
    added = post(
        gateway, "/add_product", {"product_id": "1", "product_name": "Laptop"}, bearer(token)
    )
    assert added.status == 201, added


def test_ctrl_c_stops_everything(start_runner: Callable[..., Runner]) -> None:
    runner = start_runner()
    # The gateway's /health asks each service's readiness within 2 s; the very first asks make
    # each service build its DynamoDB client and load its keys, which a loaded machine (the
    # suite beside DynamoDB Local, moto and seven processes) can take longer than that to do.
    wait_until(lambda: http_status("127.0.0.1", runner.ports.gateway, "/health") == 200, 10)
    assert set(runner.pids()) == {"user_api", "product_api", "gateway_api"}, runner.output()
    for name in ("dynamodb", "user_api", "product_api", "gateway_api"):
        assert any(line.startswith(f"[{name}]") for line in runner.lines), name
    assert runner.said("DynamoDB Local (data in"), runner.output()
    assert f"http://127.0.0.1:{runner.ports.gateway}" in runner.output()
    assert f"metrics: http://127.0.0.1:{runner.ports.metrics}/metrics" in runner.output()

    runner.process.send_signal(signal.SIGINT)

    assert runner.wait_exit() == 0, runner.output()
    assert runner.ports_in_use() == [], runner.output()
    for pid in runner.pids().values():
        assert not _alive(pid)


def test_data_survives_a_restart_of_the_runner(start_runner: Callable[..., Runner]) -> None:
    first = start_runner()
    assert first.said("created tables: "), first.output()
    _walk_through(first.gateway)
    first.process.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0, first.output()

    second = start_runner()

    assert not second.said("created tables"), second.output()
    assert second.said("tables present"), second.output()
    login = post(second.gateway, "/login_user", {"username": "john_doe", "password": PASSWORD})
    assert login.status == 200, login
    listed = get(second.gateway, "/get_products")
    assert [p["product_id"] for p in listed.json()] == ["1"], listed


def test_a_killed_service_comes_back_while_the_others_keep_serving(
    start_runner: Callable[..., Runner],
) -> None:
    runner = start_runner()
    product_pid = runner.pids()["product_api"]

    os.kill(product_pid, signal.SIGKILL)

    # The rest of the system never stops: user routes through the gateway work right away.
    _register_and_login(runner.gateway, "still_here")
    assert wait_until(lambda: runner.said("product_api exited with signal 9"), timeout=5)
    back = wait_until(
        lambda: get(runner.gateway, "/get_products").status == 200 or None, timeout=BACK_SECONDS
    )
    assert back
    # The new process's "Serving" line may trail its first answer through the pipes.
    assert wait_until(lambda: runner.pids()["product_api"] != product_pid or None, 5)
    assert runner.said("product_api restarted"), runner.output()
    assert runner.process.poll() is None


def test_a_crash_loop_leaves_only_that_service_down(start_runner: Callable[..., Runner]) -> None:
    runner = start_runner()
    killed: set[int] = set()

    def kill_current_product_api() -> bool | None:
        if runner.said("product_api exited") and runner.said("leaving it down"):
            return True
        pid = runner.pids()["product_api"]
        if pid not in killed:
            killed.add(pid)
            os.kill(pid, signal.SIGKILL)
        return None

    # Each restart is killed again, as a service that dies at start would be (5 exits a minute).
    wait_until(kill_current_product_api, timeout=60, interval=0.1)

    assert len(killed) == 5, runner.output()
    assert not port_in_use(runner.ports.product)
    listed = get(runner.gateway, "/get_products")
    assert listed.status == 503, listed
    _register_and_login(runner.gateway, "unaffected")
    assert runner.process.poll() is None, runner.output()
    # Left down for good: the longest backoff passes with no further restart.
    time.sleep(2.0)
    assert not port_in_use(runner.ports.product)


def test_a_source_change_reloads_only_the_services_it_touches(
    start_runner: Callable[..., Runner],
) -> None:
    runner = start_runner()
    before = runner.pids()

    # A save without a content change: the watcher sees it as a modification all the same.
    os.utime(services.PRODUCT.directory / "app.py")
    assert wait_until(
        lambda: runner.pids()["product_api"] != before["product_api"] or None, timeout=10
    ), runner.output()
    assert wait_until(lambda: get(runner.gateway, "/get_products").status == 200 or None, 10)
    after_product = runner.pids()
    assert after_product["user_api"] == before["user_api"]
    assert after_product["gateway_api"] == before["gateway_api"]
    assert runner.said("reloading product_api (product_api/app.py changed)"), runner.output()

    os.utime(services.ROOT / "lib" / "svckit" / "svckit" / "__init__.py")
    wait_until(
        lambda: all(runner.pids()[n] != after_product[n] for n in after_product) or None,
        timeout=15,
    )
    assert wait_until(lambda: get(runner.gateway, "/health").status == 200 or None, 15)


def test_a_second_runner_on_the_same_data_is_refused(
    start_runner: Callable[..., Runner], tmp_path: Path
) -> None:
    first = start_runner()
    second = Runner(tmp_path / "dynamodb-data")
    try:
        assert second.wait_exit() == 1, second.output()
    finally:
        second.kill()

    assert second.said("in use by another make run"), second.output()
    assert get(first.gateway, "/health").status == 200


def test_reload_can_be_turned_off(start_runner: Callable[..., Runner]) -> None:
    runner = start_runner(RELOAD="0")
    before = runner.pids()

    assert runner.said("hot reload off"), runner.output()
    os.utime(services.PRODUCT.directory / "app.py")
    time.sleep(1.5)  # a reload would have happened by now (it takes ~0.1 s to notice)
    assert runner.pids() == before
    assert not runner.said("reloading"), runner.output()


def test_sigkill_of_the_runner_leaves_no_listener(start_runner: Callable[..., Runner]) -> None:
    runner = start_runner()
    pids = runner.pids()

    runner.process.send_signal(signal.SIGKILL)  # no cleanup of its own can run
    runner.process.wait(timeout=5)

    assert wait_until(lambda: runner.ports_in_use() == [] or None, timeout=10), (
        runner.ports_in_use()
    )
    for pid in pids.values():
        assert not _alive(pid)


def test_the_moto_fallback_serves_the_walkthrough(start_runner: Callable[..., Runner]) -> None:
    runner = start_runner(LOCAL_DYNAMODB="moto")

    assert runner.said("moto's server (in memory"), runner.output()
    _walk_through(runner.gateway)
    listed = get(runner.gateway, "/get_products")
    assert [p["product_name"] for p in listed.json()] == ["Laptop"], listed
    # The services' EMF lines went to the metrics endpoint, not to the terminal.
    added = {"service": "gateway_api", "stage": "local", "route": "POST /add_product"}
    assert wait_until(
        lambda: value(scrape(runner.ports.metrics), "shop_requests_total", **added,
                      status_class="2xx") or None,
        timeout=15,
    )  # fmt: skip
    assert not runner.said('"_aws"'), runner.output()
    assert runner.said('"message":"request"'), runner.output()


def test_a_healthy_gateway_means_writes_work(tmp_path: Path) -> None:
    """Clients (scripts, CI jobs) poll ``/health`` rather than read our output: the moment the
    gateway says 200, a registration must succeed, so the tables must exist before any service
    starts answering. (Once, services came up first and the first write hit a missing table.)"""
    runner = Runner(tmp_path / "data")
    try:
        assert wait_until(lambda: get(runner.gateway, "/health").status == 200 or None, 90)
        registered = post(
            runner.gateway, "/register_user", {"username": "first_caller", "password": PASSWORD}
        )
        assert registered.status == 201, registered
    finally:
        runner.kill()


def test_the_timeline_shows_one_request_across_services(
    start_runner: Callable[..., Runner], tmp_path: Path
) -> None:
    """make run keeps every line; tools.timeline finds one request's lines in every service."""
    runner = start_runner()
    token = _register_and_login(runner.gateway, "timeline_user")
    request_id = "timeline-req-1"
    added = post(
        runner.gateway,
        "/add_product",
        {"product_id": "t1", "product_name": "Lamp"},
        {**bearer(token), "X-Request-Id": request_id},
    )
    assert added.status == 201, added
    log = tmp_path / "run.log"
    assert runner.said(f"logs: every line is kept in {log}; "), runner.output()
    assert runner.said(f"python -m tools.timeline <its X-Request-Id> --log {log}"), runner.output()

    def shown() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run(
            [sys.executable, "-m", "tools.timeline", request_id, "--log", str(log)],
            cwd=services.ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return done if "product_api" in done.stdout and "gateway_api" in done.stdout else None

    result = wait_until(shown, timeout=10)
    lines = result.stdout.splitlines()
    assert "2 services" in lines[0], result.stdout
    gateway_line = next(line for line in lines if "gateway_api" in line)
    product_line = next(line for line in lines if "product_api" in line and "POST" in line)
    assert "POST /add_product" in gateway_line
    assert "201" in gateway_line
    assert "201" in product_line
    assert lines.index(gateway_line) < lines.index(product_line)  # the gateway started first
