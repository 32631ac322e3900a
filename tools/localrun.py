"""``make run``: the whole system on 127.0.0.1, one command, Ctrl-C stops all of it.

What it starts, in order: the local token keys (once, into the git-ignored ``.local/keys``),
moto's server mode as the DynamoDB endpoint (on its own port, default 5100: moto's default 5000
is the gateway's), the tables from each service's ``resources.json``, then the three apps
through ``tools.devserver`` (Chalice's own local server with ``TCP_NODELAY`` and a real listen
backlog) on 5000-5002. It waits until each answers ``/health``, prints the URLs, prefixes every
child's log line with its name and, when a child dies or on Ctrl-C/SIGTERM, stops every process
group it started.

Environment: ``GATEWAY_API_PORT``, ``USER_API_PORT``, ``PRODUCT_API_PORT`` and
``DYNAMODB_PORT`` move the ports; ``DYNAMODB_ENDPOINT=http://host:port`` uses an endpoint that is
already running (DynamoDB Local, another moto) instead of starting moto; ``NO_COLOR`` turns
colours off.

``python -m tools.localrun --print-env`` prints the ``export`` lines that point a plain
``chalice local --stage local`` at the same DynamoDB endpoint; ``--without user_api`` leaves one
service out of the run so it can be started that way (under a debugger, say).

``LocalSystem`` is the reusable part: the integration tests and ``tools.bench_local`` start the
same processes on free ports through it, so what the tests exercise is what ``make run`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any, TextIO

from tools import services
from tools.services import ServiceDef

HOST = "127.0.0.1"
DEFAULT_DYNAMODB_PORT = 5100
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Variables that could send a child to a real account or another endpoint; the run sets its own.
_SCRUBBED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
)
# The gateway's stage settings that name the services it calls; the run points them at the
# ports it actually used (the stage config would otherwise win over the process environment).
GATEWAY_SERVICE_URLS: Mapping[str, ServiceDef] = {
    s.url_env: s for s in services.SERVICES if s.url_env
}
DYNAMODB_STARTUP_SECONDS = 30.0
SERVICE_STARTUP_SECONDS = 45.0
STOP_GRACE_SECONDS = 5.0

Sink = Callable[[str, str], None]


class StartupError(RuntimeError):
    """A process did not come up in time or died while starting; the message says which."""


# --------------------------------------------------------------------------------------------
# ports


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


@dataclass(frozen=True)
class Ports:
    """Where each process listens; ``dynamodb`` is moto's port."""

    gateway: int
    user: int
    product: int
    dynamodb: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ports:
        """API.md's ports, each movable by its ServiceDef's ``port_env`` (and ``DYNAMODB_PORT``)."""

        def read(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise ValueError(f"{name} must be a port number, got {raw!r}")
            return int(raw)

        return cls(
            gateway=read(services.GATEWAY.port_env, services.GATEWAY.port),
            user=read(services.USER.port_env, services.USER.port),
            product=read(services.PRODUCT.port_env, services.PRODUCT.port),
            dynamodb=read("DYNAMODB_PORT", DEFAULT_DYNAMODB_PORT),
        )

    @classmethod
    def free(cls) -> Ports:
        """Four free ports, for tests and benchmarks that must not collide with ``make run``."""
        gateway, user, product, dynamodb = free_ports(4)
        return cls(gateway=gateway, user=user, product=product, dynamodb=dynamodb)

    def of(self, service: ServiceDef) -> int:
        return {
            services.GATEWAY.name: self.gateway,
            services.USER.name: self.user,
            services.PRODUCT.name: self.product,
        }[service.name]


# --------------------------------------------------------------------------------------------
# child processes


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child if this process dies without cleanup
    (SIGKILL, a crashed test runner), so no moto or devserver is left holding a port.

    Linux ties it to the thread that forks; every caller here starts children from its main
    thread. Elsewhere there is no such call and the normal stop path is all there is.
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


class Child:
    """One subprocess in its own process group, its merged output kept and passed to a sink.

    Its own session means a terminal's Ctrl-C reaches only the runner, which then stops the
    children in order, and stopping a child signals its whole group, so nothing it spawned
    outlives it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        sink: Sink | None = None,
        keep_lines: int = 20_000,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._sink = sink
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._changed = threading.Condition()
        self._finished = False
        self.process = subprocess.Popen(
            self.argv,
            cwd=services.ROOT,
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


# --------------------------------------------------------------------------------------------
# probes


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


def dynamodb_client(endpoint: str, region: str = REGION) -> Any:
    """A boto3 DynamoDB client for the local endpoint: fake credentials, no retries, short
    timeouts, so a probe loop decides how long to wait rather than botocore's backoff."""
    import boto3  # deferred: --print-env and the devserver children do not need it here
    from botocore.config import Config

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1}),
    )


# --------------------------------------------------------------------------------------------
# the system


class LocalSystem:
    """moto's DynamoDB, the tables and the three devservers, started and stopped as one.

    ``LocalSystem(Ports.free()).start()`` is what the integration tests run; ``make run`` uses
    the same class with API.md's ports and a printing sink.
    """

    def __init__(
        self,
        ports: Ports,
        *,
        stage: str = "local",
        sink: Sink | None = None,
        dynamodb_endpoint: str | None = None,
        without: Sequence[str] = (),
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.ports = ports
        self.stage = stage
        self.sink = sink
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.external_dynamodb = dynamodb_endpoint is not None
        self.dynamodb_endpoint = dynamodb_endpoint or f"http://{HOST}:{ports.dynamodb}"
        self.services = tuple(s for s in services.SERVICES if s.name not in set(without))
        self.children: dict[str, Child] = {}
        self._expected_exits: set[str] = set()

    # -- addresses and environment --

    def url(self, service: ServiceDef | str) -> str:
        svc = service if isinstance(service, ServiceDef) else _service(service)
        return f"http://{HOST}:{self.ports.of(svc)}"

    def aws_env(self) -> dict[str, str]:
        """What a service process needs to reach the local endpoint and nothing else: fake
        credentials, a fixed region, every AWS call pointed at the local endpoint."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.dynamodb_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint,
        }

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(self.aws_env())
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach the prefixing reader as they happen
        env.update(self.extra_env)
        return env

    def overrides(self, service: ServiceDef) -> dict[str, str]:
        """``--set`` values for ``service``: the gateway learns where the others listen."""
        if service.name != services.GATEWAY.name:
            return {}
        return {key: self.url(target) for key, target in GATEWAY_SERVICE_URLS.items()}

    def devserver_argv(self, service: ServiceDef) -> list[str]:
        argv = [
            self.python, "-m", "tools.devserver",
            "--project-dir", str(service.directory),
            "--stage", self.stage,
            "--host", HOST,
            "--port", str(self.ports.of(service)),
        ]  # fmt: skip
        for key, value in self.overrides(service).items():
            argv += ["--set", f"{key}={value}"]
        return argv

    # -- start --

    def start(self) -> LocalSystem:
        """Start everything and return once each service answers ``/health``; on any failure
        stop what was started and raise StartupError."""
        from svckit import keys  # deferred: the children import the app code, not the runner

        try:
            keys.ensure_local_keys(services.KEYS_DIR)
            self._check_ports_free()
            if not self.external_dynamodb:
                moto = [self.python, "-m", "tools.motoserver"]
                self._spawn("dynamodb", [*moto, "-H", HOST, "-p", str(self.ports.dynamodb)])
            # Tables before services: once a service answers /health it must be usable, or a
            # client polling /health (a script, a test) could write before its table exists.
            self.create_tables(time.monotonic() + DYNAMODB_STARTUP_SECONDS)
            for svc in self.services:
                self.start_service(svc, wait=False)
            deadline = time.monotonic() + SERVICE_STARTUP_SECONDS
            partial = len(self.services) < len(services.SERVICES)
            for svc in self.services:
                # With a service left out the gateway's /health says 503 until the developer
                # starts it; then any answer means the gateway itself is up.
                self.wait_healthy(svc, deadline, any_answer=partial and svc is services.GATEWAY)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_ports_free(self) -> None:
        wanted = [(svc.name, self.ports.of(svc), svc.port_env) for svc in self.services]
        if not self.external_dynamodb:
            wanted.append(("DynamoDB (moto)", self.ports.dynamodb, "DYNAMODB_PORT"))
        busy = [
            f"{name} port {port} (set {env})" for name, port, env in wanted if port_in_use(port)
        ]
        if busy:
            raise StartupError("already in use: " + ", ".join(busy))

    def _spawn(self, name: str, argv: Sequence[str]) -> Child:
        self._expected_exits.discard(name)
        child = Child(name, argv, self.child_env(), self.sink)
        self.children[name] = child
        return child

    def start_service(self, service: ServiceDef | str, wait: bool = True) -> Child:
        """Start (or restart) one app's devserver; with ``wait``, return once it is healthy."""
        svc = service if isinstance(service, ServiceDef) else _service(service)
        old = self.children.get(svc.name)
        if old is not None and old.running:
            raise RuntimeError(f"{svc.name} is already running")
        child = self._spawn(svc.name, self.devserver_argv(svc))
        if wait:
            self.wait_healthy(svc, time.monotonic() + SERVICE_STARTUP_SECONDS)
        return child

    def create_tables(self, deadline: float) -> list[str]:
        """Create the stage's tables once the endpoint answers; doubles as its readiness probe."""
        from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

        client = dynamodb_client(self.dynamodb_endpoint)
        while True:
            try:
                return services.create_tables(client, self.stage)
            except (EndpointConnectionError, ConnectionClosedError) as exc:
                moto = self.children.get("dynamodb")
                if moto is not None and not moto.running:
                    raise StartupError(
                        f"moto server exited with {moto.returncode}:\n{moto.tail()}"
                    ) from exc
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"DynamoDB endpoint {self.dynamodb_endpoint} did not answer in time"
                    ) from exc
                time.sleep(0.1)

    def wait_healthy(
        self, service: ServiceDef | str, deadline: float, any_answer: bool = False
    ) -> None:
        """Poll ``GET /health`` until 200 (or, with ``any_answer``, any HTTP answer); fail fast
        if the process died, else at ``deadline``."""
        svc = service if isinstance(service, ServiceDef) else _service(service)
        child = self.children[svc.name]
        port = self.ports.of(svc)
        while True:
            status = http_status(HOST, port)
            if status == 200 or (any_answer and status is not None):
                return
            if not child.running:
                child.finish()
                raise StartupError(
                    f"{svc.name} exited with {child.returncode} while starting:\n{child.tail()}"
                )
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{svc.name} did not answer /health on port {port} in time:\n{child.tail()}"
                )
            time.sleep(0.1)

    # -- run --

    def unexpected_exit(self) -> Child | None:
        """A child that exited without being asked to, if any."""
        for name, child in self.children.items():
            if name not in self._expected_exits and not child.running:
                return child
        return None

    def watch(self, poll_seconds: float = 0.2) -> Child:
        """Block until some child exits unexpectedly and return it (``make run``'s main loop)."""
        while True:
            dead = self.unexpected_exit()
            if dead is not None:
                return dead
            time.sleep(poll_seconds)

    # -- stop --

    def stop_service(self, service: ServiceDef | str, signum: int = signal.SIGTERM) -> int:
        """Stop one child on purpose (SIGKILL simulates a crash); the rest keep running."""
        name = service.name if isinstance(service, ServiceDef) else service
        child = self.children[name]
        self._expected_exits.add(name)
        if signum == signal.SIGTERM:
            return child.stop()
        child.signal_group(signum)
        code = child.process.wait(timeout=STOP_GRACE_SECONDS)
        child.finish()
        return code

    def stop(self) -> None:
        """Stop every child: SIGTERM all groups at once, SIGKILL what is left after the grace
        period. Safe to call twice and after a failed start."""
        children = list(self.children.items())
        self._expected_exits.update(name for name, _ in children)
        for _, child in reversed(children):
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for _, child in children:
            if child.wait(deadline - time.monotonic()) is None:
                child.signal_group(signal.SIGKILL)
                child.process.wait()
            child.finish()

    def __enter__(self) -> LocalSystem:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _service(name: str) -> ServiceDef:
    for svc in services.SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"no service named {name!r}")


# --------------------------------------------------------------------------------------------
# make run


_COLORS = {"dynamodb": "35", "user_api": "36", "product_api": "33", "gateway_api": "32"}


class LinePrinter:
    """The sink ``make run`` uses: ``[name] line``, name coloured on a terminal, whole lines
    written under one lock so concurrent children never interleave mid-line."""

    def __init__(self, stream: TextIO = sys.stdout, color: bool | None = None) -> None:
        self.stream = stream
        if color is None:
            color = stream.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.width = max(len(name) for name in _COLORS)
        self._lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        label = f"[{name}]".ljust(self.width + 2)
        if self.color:
            label = f"\033[{_COLORS.get(name, '37')}m{label}\033[0m"
        with self._lock, contextlib.suppress(OSError, ValueError):
            # A closed terminal or pipe must not kill the reader thread: the child would then
            # block on a full pipe. Its lines are still kept by Child.
            self.stream.write(f"{label} {line}\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        self("localrun", text)


def banner(system: LocalSystem) -> str:
    """The URLs and the first step of API.md's walk-through, with the ports actually used."""
    gateway = f"localhost:{system.ports.gateway}"
    lines = [
        f"ready: stage {system.stage}, DynamoDB at {system.dynamodb_endpoint}",
    ]
    lines += [f"  {svc.name:<12} {system.url(svc)}" for svc in system.services]
    lines += [
        "walk-through (API.md):",
        f"  curl -s -X POST {gateway}/register_user -H 'Content-Type: application/json' \\",
        '       -d \'{"username": "john_doe", "password": "correct-horse-1234"}\'',
        f"  then /login_user, /add_product with the token, and curl -s {gateway}/get_products",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def print_env(system: LocalSystem, stream: TextIO = sys.stdout) -> None:
    """``export`` lines for running plain ``chalice local --stage local`` against the same
    DynamoDB endpoint (``make run`` or ``--without NAME`` running alongside)."""
    stream.write('# eval "$(python -m tools.localrun --print-env)"\n')
    stream.write(f"unset {' '.join(_SCRUBBED_ENV[:3])}\n")
    for key, value in system.aws_env().items():
        stream.write(f"export {key}={shlex.quote(value)}\n")
    for svc in services.SERVICES:
        stream.write(
            f"# {svc.name}: cd {svc.name} && chalice local --stage {system.stage} "
            f"--port {system.ports.of(svc)}\n"
        )
    stream.write(
        "# the gateway reads the service URLs from its stage config (5001, 5002); with other\n"
        "# ports use: python -m tools.devserver --project-dir gateway_api --port N "
        "--set USER_API_URL=... --set PRODUCT_API_URL=...\n"
    )


class _Terminate(Exception):
    """SIGTERM, turned into an exception so the same cleanup path runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminate()


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While stopping, a second Ctrl-C must not abandon half-stopped children."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until Ctrl-C/SIGTERM (exit 0) or until a child dies (exit 1)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.localrun", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--print-env", action="store_true", help="print export lines and exit")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=[svc.name for svc in services.SERVICES],
        help="leave this service out (run it yourself with --print-env's settings)",
    )
    parser.add_argument("--stage", default="local")
    args = parser.parse_args(argv)
    try:
        ports = Ports.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    endpoint = os.environ.get("DYNAMODB_ENDPOINT", "").strip() or None
    printer = LinePrinter()
    system = LocalSystem(
        ports, stage=args.stage, sink=printer, dynamodb_endpoint=endpoint, without=args.without
    )
    if args.print_env:
        from svckit import keys

        keys.ensure_local_keys(services.KEYS_DIR)
        print_env(system)
        return 0

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started with SIGINT ignored (a script's `cmd &`): `kill -INT` must still stop it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        printer.say(f"starting {', '.join(s.name for s in system.services)} (stage {args.stage})")
        system.start()
        for line in banner(system).splitlines():
            printer.say(line)
        dead = system.watch()
        printer.say(f"{dead.name} exited with {dead.returncode}; stopping everything")
        code = 1
    except StartupError as exc:
        printer.say(f"could not start: {exc}")
        code = 1
    except (KeyboardInterrupt, _Terminate):
        printer.say("stopping")
    finally:
        with _signals_ignored():
            system.stop()
    printer.say("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
