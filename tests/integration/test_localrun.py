"""``make run`` itself, as a developer meets it: ``python -m tools.localrun`` in a terminal.

The other integration tests drive ``LocalSystem`` directly; this runs the command, so the part
only the command has is covered too: the ``[name]`` prefixes, the ready banner, and its two ways
of ending: Ctrl-C (exit 0) and a service dying (exit 1), both leaving no process behind, which
is checked by every port being free again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.system import get, post, wait_until
from tools import services
from tools.localrun import Ports, http_status, port_in_use

pytestmark = pytest.mark.integration

READY_SECONDS = 60.0
EXIT_SECONDS = 15.0
_SERVING = re.compile(r"^\[(\w+)\]\s+Serving \w+ \(stage local, pid (\d+)\) on http://")


class Runner:
    """``python -m tools.localrun`` on free ports, its output collected line by line."""

    def __init__(self) -> None:
        self.ports = Ports.free()
        env = {
            **os.environ,
            services.GATEWAY.port_env: str(self.ports.gateway),
            services.USER.port_env: str(self.ports.user),
            services.PRODUCT.port_env: str(self.ports.product),
            "DYNAMODB_PORT": str(self.ports.dynamodb),
            "NO_COLOR": "1",
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

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Ctrl-C stops everything" in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> None:
        assert self._ready.wait(READY_SECONDS), self.output()
        assert self.process.poll() is None, self.output()

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in map(_SERVING.match, self.lines) if m}

    def ports_in_use(self) -> list[int]:
        every = (self.ports.gateway, self.ports.user, self.ports.product, self.ports.dynamodb)
        return [port for port in every if port_in_use(port)]

    def wait_exit(self) -> int:
        code = self.process.wait(timeout=EXIT_SECONDS)
        self._reader.join(timeout=5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def runner() -> Iterator[Runner]:
    started = Runner()
    try:
        yield started
    finally:
        started.kill()


def test_ctrl_c_stops_everything(runner: Runner) -> None:
    runner.wait_ready()
    assert http_status("127.0.0.1", runner.ports.gateway, "/health") == 200
    assert set(runner.pids()) == {"user_api", "product_api", "gateway_api"}, runner.output()
    # moto logs nothing on success (tools/motoserver.py), so only the services are checked here.
    for name in ("user_api", "product_api", "gateway_api"):
        assert any(line.startswith(f"[{name}]") for line in runner.lines), name
    assert f"http://127.0.0.1:{runner.ports.gateway}" in runner.output()

    runner.process.send_signal(signal.SIGINT)

    assert runner.wait_exit() == 0, runner.output()
    assert runner.ports_in_use() == [], runner.output()
    for pid in runner.pids().values():
        assert not _alive(pid)


def test_a_dying_service_stops_everything_with_exit_1(runner: Runner) -> None:
    runner.wait_ready()
    user_pid = runner.pids()["user_api"]

    os.kill(user_pid, signal.SIGKILL)

    assert runner.wait_exit() == 1, runner.output()
    assert any("user_api exited" in line for line in runner.lines), runner.output()
    assert runner.ports_in_use() == [], runner.output()


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def test_a_healthy_gateway_means_writes_work(runner: Runner) -> None:
    """Clients (scripts, CI jobs) poll ``/health`` rather than read our output: the moment the
    gateway says 200, a registration must succeed, so the tables must exist before any service
    starts answering. (Once, services came up first and the first write hit a missing table.)"""
    base = f"http://127.0.0.1:{runner.ports.gateway}"
    assert wait_until(lambda: get(base, "/health").status == 200 or None, timeout=60)
    registered = post(
        base, "/register_user", {"username": "first_caller", "password": "correct-horse-1234"}
    )
    assert registered.status == 201, registered
