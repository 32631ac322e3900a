"""One child process of the local runtime, and the ports it listens on.

Each child leads its own session, so a terminal's Ctrl-C reaches only the runner, which then
stops the children in order, and stopping a child signals its whole group, so nothing it
spawned outlives it. On Linux each child also asks the kernel to SIGTERM it when the runner
dies without cleaning up (SIGKILL, a crashed test runner): no child is left holding a port.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 5.0

Sink = Callable[[str, str], None]


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct free ports, all held open together so the kernel cannot repeat one."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something already listens on ``host:port`` (so our bind would fail)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_status(
    url_host: str, port: int, path: str = "/health", timeout: float = 1.0
) -> int | None:
    """The status of ``GET path``, or None when nothing answers in ``timeout`` seconds."""
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"X-Request-Id": "localrun-health-probe"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


T = TypeVar("T")


def once_answering(
    call: Callable[[], T],
    *,
    endpoint: str,
    program: str,
    deadline: float,
    alive: Callable[[], bool] | None,
    unavailable: Callable[[str], Exception],
) -> T:
    """``call()`` (its first AWS request doubles as the readiness probe of a program just
    started at ``endpoint``) tried again every 0.1 s while nothing answers there. ``alive()``
    False means ``program`` died, reported at once as ``unavailable``; so is a ``deadline``
    (``time.monotonic()``) that passes."""
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    while True:
        try:
            return call()
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
            if alive is not None and not alive():
                raise unavailable(f"the {program} exited while starting") from exc
            if time.monotonic() > deadline:
                raise unavailable(f"{endpoint} did not answer in time") from exc
            time.sleep(0.1)


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child if this process dies without cleanup.

    Linux ties it to the *thread* that forks: when that thread ends, the child is signalled.
    So every child is started from the runner's main thread (the supervisor's loop), never from
    a helper thread. Elsewhere there is no such call and the normal stop path is all there is.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def _set() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return _set


_PREEXEC = _parent_death_signal()


def describe_exit(code: int | None) -> str:
    """``-9`` -> ``"signal 9 (SIGKILL)"``, ``1`` -> ``"status 1"``: what a person reads."""
    if code is None:
        return "no status"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {-code} ({signal.Signals(-code).name})"
        return f"signal {-code}"
    return f"status {code}"


class Child:
    """One subprocess in its own process group, its merged output kept and passed to a sink."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        sink: Sink | None = None,
        cwd: Path | None = None,
        keep_lines: int = 20_000,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.started_at = time.monotonic()
        self._sink = sink
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._changed = threading.Condition()
        self._finished = False
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_PREEXEC,  # only a prctl call, see _parent_death_signal
        )
        self._reader = threading.Thread(target=self._pump, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        stream: IO[bytes] | None = self.process.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
            if self._sink is not None:
                self._sink(self.name, line)
        stream.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def lines(self) -> list[str]:
        """Every output line kept so far (both stdout and stderr)."""
        with self._changed:
            return list(self._lines)

    def tail(self, count: int = 30) -> str:
        return "\n".join(self.lines()[-count:])

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """The first kept line matching ``predicate``, waiting at most ``timeout`` seconds for it
        (output arrives through a pipe and a thread, a moment after the request that caused it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (its pid: it leads its own session);
        nothing once ``finish`` has run, so a recycled pid can never be hit."""
        if self._finished:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit code."""
        self.signal_group(signal.SIGTERM)
        code = self.wait(grace)
        if code is None:
            self.signal_group(signal.SIGKILL)
            code = self.process.wait()
        self.finish()
        return code

    def finish(self) -> None:
        """After the child exited: kill any stragglers in its group, drain its output."""
        self.signal_group(signal.SIGKILL)
        self._finished = True
        self._reader.join(timeout=2.0)
