"""``make run``: the whole system on 127.0.0.1, one command, Ctrl-C stops all of it.

What it starts, in order: the local token keys (once, into the git-ignored ``.local/keys``), the
DynamoDB engine on its own port (default 5100; AWS's DynamoDB Local with its data in
``.local/dynamodb-data``, or moto's server where Java 17+ or npm is missing: see
``tools.local.dynamodb``), the tables from each service's ``resources.json`` (only those
missing), the events endpoint (EventBridge and SQS from moto's server, port 5102) with the bus,
queues, dead-letter queues and rules of ``tools.topology``, then the three apps through
``tools.devserver`` (Chalice's own local server with ``TCP_NODELAY`` and a real listen backlog)
on 5000-5002 and one event worker per data service (``tools.local.eventworker``: the stream and
queue pollers that invoke the service's event handlers as Lambda's event source mappings
would, see ``tools.local.events``). It waits until each app answers ``/health`` and each worker
polls, prints the URLs, and then supervises: every child's line is printed with its name; a
child that exits unexpectedly is restarted with backoff while the others keep serving
(``tools.local.supervisor``; a restarted engine gets its tables back, a restarted events
endpoint its wiring); a saved source file restarts the services it touches and their workers
(``tools.local.reload``); Ctrl-C or SIGTERM stops every process group it started.

The services' metrics (CloudWatch EMF lines in their output) are taken out of what is printed
and served to Prometheus at ``http://127.0.0.1:5101/metrics`` (``tools.local.metrics``). The
gateway's OpenAPI document is rendered for a person by Swagger UI at ``http://127.0.0.1:5103/``
(``tools.local.apidocs``; off, saying why, where npm or the port is missing).

Environment: ``GATEWAY_API_PORT``, ``USER_API_PORT``, ``PRODUCT_API_PORT``, ``DYNAMODB_PORT``,
``EVENTS_PORT``, ``METRICS_PORT`` and ``DOCS_PORT`` move the ports;
``LOCAL_DYNAMODB=dynamodb-local|moto`` forces an engine; ``DYNAMODB_DATA_DIR`` moves DynamoDB
Local's data; ``DYNAMODB_ENDPOINT=http://host:port`` uses an endpoint that is already running
instead of starting one; ``RELOAD=0`` (or ``--no-reload``) turns hot reload off; ``NO_COLOR``
turns colours off; ``RUN_LOG`` moves the file every line is kept in (``.local/logs/run.log``,
read by ``tools.timeline``).

``python -m tools.localrun --print-env`` prints the ``export`` lines that point a plain
``chalice local --stage local`` (and ``python -m tools.local.eventworker``) at the same DynamoDB
and events endpoints; ``--without user_api`` leaves one service and its event worker out of the
run so they can be started that way (under a debugger, say).

``LocalSystem`` is the reusable part: the integration tests and ``tools.bench_local`` start the
same processes on free ports through it, so what the tests exercise is what ``make run`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from tools import services, topology
from tools.local import apidocs, dynamodb, runlog
from tools.local import events as local_events
from tools.local import metrics as local_metrics
from tools.local.dynamodb import Engine, EngineUnavailable
from tools.local.events import held as local_held
from tools.local.printer import LinePrinter
from tools.local.process import (
    HOST,
    Child,
    Sink,
    free_port,
    free_ports,
    http_status,
    port_in_use,
)
from tools.local.reload import ReloadMap, Watcher
from tools.local.runlog import RunLog
from tools.local.supervisor import Program, RestartPolicy, State, Supervisor
from tools.services import ServiceDef

__all__ = [
    "HOST",
    "Child",
    "LocalSystem",
    "Ports",
    "StartupError",
    "free_port",
    "free_ports",
    "http_status",
    "port_in_use",
]

DEFAULT_DYNAMODB_PORT = dynamodb.DEFAULT_PORT
DEFAULT_EVENTS_PORT = local_events.DEFAULT_PORT
DYNAMODB = "dynamodb"  # the engine's program name and output prefix
EVENTS = local_events.EVENTS  # the EventBridge + SQS program's name and output prefix
REGION = dynamodb.REGION
FAKE_CREDENTIALS = dynamodb.FAKE_CREDENTIALS
# Variables that could send a child to a real account or another endpoint; the run sets its own.
_SCRUBBED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "AWS_ENDPOINT_URL_EVENTBRIDGE",
    "AWS_ENDPOINT_URL_SQS",
)
# The gateway's stage settings that name the services it calls; the run points them at the
# ports it actually used (the stage config would otherwise win over the process environment).
GATEWAY_SERVICE_URLS: Mapping[str, ServiceDef] = {
    s.url_env: s for s in services.SERVICES if s.url_env
}
DYNAMODB_STARTUP_SECONDS = 60.0
SERVICE_STARTUP_SECONDS = 45.0
TICK_SECONDS = 0.1
SHARED_SOURCES = ("lib/svckit",)


class StartupError(RuntimeError):
    """A process did not come up in time or died while starting; the message says which."""


@dataclass(frozen=True)
class Ports:
    """Where each process listens; ``dynamodb`` is the DynamoDB engine's port, ``events`` the
    EventBridge + SQS endpoint's."""

    gateway: int
    user: int
    product: int
    dynamodb: int
    events: int = DEFAULT_EVENTS_PORT
    metrics: int = local_metrics.DEFAULT_PORT
    docs: int = apidocs.DEFAULT_PORT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ports:
        """API.md's ports, each movable by its ServiceDef's ``port_env`` (and ``DYNAMODB_PORT``)."""

        def read(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
                raise ValueError(f"{name} must be a port number, got {raw!r}")
            return int(raw)

        return cls(
            gateway=read(services.GATEWAY.port_env, services.GATEWAY.port),
            user=read(services.USER.port_env, services.USER.port),
            product=read(services.PRODUCT.port_env, services.PRODUCT.port),
            dynamodb=read("DYNAMODB_PORT", DEFAULT_DYNAMODB_PORT),
            events=read(local_events.PORT_ENV, DEFAULT_EVENTS_PORT),
            metrics=read(local_metrics.PORT_ENV, local_metrics.DEFAULT_PORT),
            docs=read(apidocs.PORT_ENV, apidocs.DEFAULT_PORT),
        )

    @classmethod
    def free(cls) -> Ports:
        """Free ports for every process, for tests and benchmarks that must not collide with
        ``make run``."""
        gateway, user, product, dynamodb_port, events_port, metrics_port, docs_port = free_ports(7)
        return cls(
            gateway=gateway,
            user=user,
            product=product,
            dynamodb=dynamodb_port,
            events=events_port,
            metrics=metrics_port,
            docs=docs_port,
        )

    def of(self, service: ServiceDef) -> int:
        return {
            services.GATEWAY.name: self.gateway,
            services.USER.name: self.user,
            services.PRODUCT.name: self.product,
        }[service.name]


class LocalSystem:
    """The DynamoDB engine, the tables, the events endpoint (EventBridge and SQS, wired from
    ``tools.topology``), the three devservers and one event worker per data service, started,
    supervised and stopped as one.

    ``LocalSystem(Ports.free()).start()`` is what the integration tests run (DynamoDB Local in
    memory unless an ``engine`` is given); ``make run`` uses the same class with API.md's ports,
    the persistent engine, a printing sink and ``supervise()``. ``events=False`` leaves the
    events endpoint and the workers out (the services' HTTP side alone).
    """

    def __init__(
        self,
        ports: Ports,
        *,
        stage: str = "local",
        sink: Sink | None = None,
        engine: Engine | None = None,
        dynamodb_endpoint: str | None = None,
        without: Sequence[str] = (),
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        policy: RestartPolicy | None = None,
        events: bool = True,
    ) -> None:
        self.ports = ports
        self.stage = stage
        # The services' metrics lines go to the Prometheus exporter, not on to the sink.
        self.exporter = local_metrics.Exporter()
        sink = self.exporter.sink(sink)
        self.sink = sink
        # The docs page renders the gateway's document, fetched from wherever the gateway listens.
        self.docs = apidocs.DocsServer(f"http://{HOST}:{ports.gateway}")
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.external_dynamodb = dynamodb_endpoint is not None
        self.dynamodb_endpoint = dynamodb_endpoint or f"http://{HOST}:{ports.dynamodb}"
        self.engine = None if self.external_dynamodb else engine
        self.services = tuple(s for s in services.SERVICES if s.name not in set(without))
        self.events = events
        self.events_endpoint = f"http://{HOST}:{ports.events}"
        # A service left out (run by hand) takes its worker with it: both are its code.
        self.workers = (
            tuple(s for s in self.services if s.owns_table and _has_events(s)) if events else ()
        )
        self._data_lock: dynamodb.DataDirLock | None = None
        # Where the workers keep their stream positions (events.Positions): beside DynamoDB
        # Local's data when that is on disk (kept across runs, with the broker's messages of a
        # graceful stop), else a folder of this run's own.
        self._positions_dir: Path | None = None
        self._positions_kept = False
        # Workers whose positions are reset when they next start (the broker restarted and lost
        # what it held: their relays read the streams again from the trim horizon).
        self._replay_workers: set[str] = set()
        self._started = False
        self.supervisor = Supervisor(
            self.child_env, sink, self.say, policy=policy, cwd=services.ROOT
        )
        if not self.external_dynamodb:
            self.supervisor.add(Program(DYNAMODB, self._engine_argv))
        if events:
            self.supervisor.add(Program(EVENTS, self._events_argv))
        for svc in self.services:
            self.supervisor.add(Program(svc.name, self._argv_of(svc)))
        for svc in self.workers:
            self.supervisor.add(Program(worker_name(svc), self._worker_argv_of(svc)))

    # -- addresses and environment --

    def say(self, text: str) -> None:
        """The runner's own messages go to the same sink as the children's lines."""
        if self.sink is None:
            return
        say = getattr(self.sink, "say", None)
        if say is not None:
            say(text)
        else:
            for line in text.splitlines():
                self.sink("localrun", line)

    def url(self, service: ServiceDef | str) -> str:
        svc = service if isinstance(service, ServiceDef) else _service(service)
        return f"http://{HOST}:{self.ports.of(svc)}"

    @property
    def children(self) -> dict[str, Child]:
        """The current process of each program that has been started."""
        return {
            name: program.child
            for name, program in self.supervisor.programs.items()
            if program.child is not None
        }

    def aws_env(self) -> dict[str, str]:
        """What a service process needs to reach the local endpoints and nothing else: fake
        credentials, a fixed region, every AWS call pointed at a local endpoint. botocore reads
        ``AWS_ENDPOINT_URL_<service id>`` per client: DynamoDB and its streams go to the engine,
        EventBridge (the relays' PutEvents) and SQS to the events endpoint."""
        env = {
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.dynamodb_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.dynamodb_endpoint,
        }
        if self.events:
            env["AWS_ENDPOINT_URL_EVENTBRIDGE"] = self.events_endpoint
            env["AWS_ENDPOINT_URL_SQS"] = self.events_endpoint
        return env

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

    def _argv_of(self, service: ServiceDef) -> Callable[[], list[str]]:
        return lambda: self.devserver_argv(service)

    def worker_argv(self, service: ServiceDef) -> list[str]:
        argv = [
            self.python, "-m", "tools.local.eventworker",
            "--service", service.name,
            "--stage", self.stage,
        ]  # fmt: skip
        if self._positions_dir is not None:
            path = self._positions_dir / f"{worker_name(service)}.json"
            if worker_name(service) in self._replay_workers:
                # Called as the worker starts, after its previous process has exited: nothing
                # writes the file any more.
                self._replay_workers.discard(worker_name(service))
                path.unlink(missing_ok=True)
            argv += ["--positions", str(path)]
        return argv

    def _worker_argv_of(self, service: ServiceDef) -> Callable[[], list[str]]:
        return lambda: self.worker_argv(service)

    def _events_argv(self) -> list[str]:
        # moto's server answers every service it mocks on one port; this one is only ever
        # asked about EventBridge and SQS (DynamoDB has its own engine, even when that is moto).
        return [self.python, "-m", "tools.motoserver", "-H", HOST, "-p", str(self.ports.events)]

    def _engine_argv(self) -> list[str]:
        assert self.engine is not None
        self.engine.prepare()  # on every start: a restart must find its data folder again
        return self.engine.argv(self.python, HOST, self.ports.dynamodb)

    # -- start --

    def start(self) -> LocalSystem:
        """Start everything and return once each service answers ``/health``; on any failure
        stop what was started and raise StartupError."""
        from svckit import keys  # deferred: the children import the app code, not the runner

        try:
            keys.ensure_local_keys(services.KEYS_DIR)
            if not self.external_dynamodb and self.engine is None:
                self.engine = dynamodb.choose(data_dir=None, say=self.say)
            self._check_ports_free()
            self.exporter.serve(HOST, self.ports.metrics)
            # Never a reason not to start: when it cannot serve, the banner says why.
            self.docs.serve(HOST, self.ports.docs)
            if self.engine is not None and self.engine.data_dir is not None:
                self._data_lock = dynamodb.DataDirLock(self.engine.data_dir).acquire()
            if self.engine is not None:
                self.supervisor.start(DYNAMODB)
            # Tables before services: once a service answers /health it must be usable, or a
            # client polling /health (a script, a test) could write before its table exists.
            created = self.create_tables(time.monotonic() + DYNAMODB_STARTUP_SECONDS)
            self.say(f"created tables: {', '.join(created)}" if created else "tables present")
            if self.engine is not None:
                # From now on a restarted engine gets its missing tables back (moto forgets
                # them; DynamoDB Local keeps them on disk) before anyone needs them.
                self.supervisor.programs[DYNAMODB].after_start = self._tables_after_restart
            if self.events:
                # The bus and the queues before any service: a relay's first PutEvents must
                # find its bus, and a rule must exist before the event it should route.
                self._positions_dir, self._positions_kept = self._choose_positions_dir()
                self.supervisor.start(EVENTS)
                wired = self.wire_events(time.monotonic() + DYNAMODB_STARTUP_SECONDS)
                self.say(f"events wired on {self.events_endpoint}: {_wiring(wired)}")
                if self._positions_kept:
                    self._resume_or_replay()
                self.supervisor.programs[EVENTS].after_start = self._events_after_restart
            for svc in self.services:
                self.supervisor.start(svc.name)
            for svc in self.workers:
                self.supervisor.start(worker_name(svc))
            deadline = time.monotonic() + SERVICE_STARTUP_SECONDS
            partial = len(self.services) < len(services.SERVICES)
            for svc in self.services:
                # With a service left out the gateway's /health says 503 until the developer
                # starts it; then any answer means the gateway itself is up.
                self.wait_healthy(svc, deadline, any_answer=partial and svc is services.GATEWAY)
            for svc in self.workers:
                self.wait_worker(svc, deadline)
            self._started = True
        except (
            EngineUnavailable,
            local_events.EventsUnavailable,
            dynamodb.DataDirBusy,
            OSError,
        ) as exc:
            self.stop()
            raise StartupError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def _check_ports_free(self) -> None:
        wanted = [(svc.name, self.ports.of(svc), svc.port_env) for svc in self.services]
        if not self.external_dynamodb:
            wanted.append(("DynamoDB", self.ports.dynamodb, "DYNAMODB_PORT"))
        if self.events:
            wanted.append(("events", self.ports.events, local_events.PORT_ENV))
        wanted.append(("metrics", self.ports.metrics, local_metrics.PORT_ENV))
        busy = [
            f"{name} port {port} (set {env})" for name, port, env in wanted if port_in_use(port)
        ]
        if busy:
            raise StartupError("already in use: " + ", ".join(busy))

    def start_service(self, service: ServiceDef | str, wait: bool = True) -> Child:
        """Start (or restart) one app's devserver; with ``wait``, return once it is healthy."""
        svc = service if isinstance(service, ServiceDef) else _service(service)
        child = self.supervisor.start(svc.name)
        if wait:
            self.wait_healthy(svc, time.monotonic() + SERVICE_STARTUP_SECONDS)
        return child

    def create_tables(self, deadline: float) -> list[str]:
        """Create the stage's missing tables once the endpoint answers; doubles as its readiness
        probe, and fails at once (with the engine's last lines) if the engine died."""
        engine = self.supervisor.programs.get(DYNAMODB)

        def alive() -> bool:
            return engine is None or engine.child is None or engine.child.running

        try:
            return dynamodb.create_tables_when_ready(
                self.dynamodb_endpoint, self.stage, deadline, alive
            )
        except EngineUnavailable as exc:
            tail = engine.child.tail() if engine and engine.child else ""
            raise StartupError(f"{exc}:\n{tail}" if tail else str(exc)) from exc

    def _tables_after_restart(self, child: Child) -> None:
        created = dynamodb.create_tables_when_ready(
            self.dynamodb_endpoint,
            self.stage,
            time.monotonic() + DYNAMODB_STARTUP_SECONDS,
            lambda: child.running,
        )
        if created:
            self.say(f"created tables again: {', '.join(created)}")

    def wire_events(self, deadline: float) -> list[str]:
        """Create the topology's bus, queues and rules once the events endpoint answers; fails
        at once (with the program's last lines) if it died."""
        program = self.supervisor.programs[EVENTS]

        def alive() -> bool:
            return program.child is None or program.child.running

        try:
            return local_events.wire_when_ready(self.events_endpoint, self.stage, deadline, alive)
        except local_events.EventsUnavailable as exc:
            tail = program.child.tail() if program.child else ""
            raise StartupError(f"{exc}:\n{tail}" if tail else str(exc)) from exc

    def _events_after_restart(self, child: Child) -> None:
        """moto keeps the bus and the queues in memory: a restarted events program has none.
        Wire them again, then restart the workers with fresh position files, so their relays
        read the streams again from the trim horizon and publish again whatever the lost
        queues held (the consumers apply each event id once)."""
        wired = local_events.wire_when_ready(
            self.events_endpoint,
            self.stage,
            time.monotonic() + DYNAMODB_STARTUP_SECONDS,
            lambda: child.running,
        )
        self.say(f"events wired again: {_wiring(wired)}")
        # the restarted workers start from the trim horizon
        self._replay_workers.update(worker_name(svc) for svc in self.workers)
        self.supervisor.request_restart(
            [worker_name(svc) for svc in self.workers], "the events endpoint restarted"
        )

    # -- stream positions and the broker's messages across restarts --

    def _choose_positions_dir(self) -> tuple[Path, bool]:
        """(folder, kept): ``<data>/events`` when DynamoDB Local keeps its data on disk, so the
        positions live and die with the streams they point into (``make wipe`` removes both);
        else a new folder for this run (the tables are gone at the end of it anyway)."""
        if self.engine is not None and self.engine.persistent and self.engine.data_dir:
            return self.engine.data_dir / EVENTS_STATE_DIR, True
        return _positions_dir(), False

    def _resume_or_replay(self) -> None:
        """Before any worker polls: after a graceful stop, send back what the broker held then
        and let the relays resume from their positions; after anything else (a crash, a
        SIGKILL, a first start), the broker's messages are lost, so the positions are dropped
        and the relays read the retained stream (24 h) from its trim horizon, publishing again
        what was lost (the consumers apply each event id once)."""
        assert self._positions_dir is not None
        held_file = self._positions_dir / local_held.HELD_FILE
        loaded = local_held.load(held_file)
        messages, complete = loaded if loaded is not None else ([], False)
        total = 0
        if messages:
            sqs = local_events.client("sqs", self.events_endpoint)
            total = sum(local_held.resend(sqs, messages).values())
        kept = f"; {total} message(s) kept at the last stop sent back" if total else ""
        positions = sorted(self._positions_dir.glob("*_worker.json"))
        if not complete:
            for path in positions:
                path.unlink()
        # Only once they are back and the positions dropped: a failure above leaves the file
        # (and a replay) for the next start.
        held_file.unlink(missing_ok=True)
        if complete:
            self.say(f"events: the relays resume from their stream positions{kept}")
        elif positions:
            self.say(
                "events: the last run did not stop cleanly (what the broker held may be lost); "
                f"the relays read the streams again from their trim horizon{kept}"
            )

    def _keep_held(self) -> None:
        """A graceful stop that loses no event: stop the apps (no new stream records), give
        the running workers up to ``DRAIN_SECONDS`` to empty the consumer queues, stop them
        (each ends its current invocation and saves its position), then keep whatever the
        broker still holds in ``held-messages.json``. Any failure leaves no file, which the next
        start reads as "replay the streams": slower, but nothing is lost."""
        assert self._positions_dir is not None
        apps = [svc.name for svc in self.services]
        self.supervisor.stop_all(names=apps)
        workers = {worker_name(svc) for svc in self.workers}
        running = {
            name
            for name in workers
            if (child := self.supervisor.child(name)) is not None and child.running
        }
        events_program = self.supervisor.programs.get(EVENTS)
        if events_program is None or events_program.child is None:
            return
        if not events_program.child.running:
            return
        try:
            sqs = local_events.client("sqs", self.events_endpoint)
            drained = [
                sub.queue_name(self.stage)
                for sub in topology.SUBSCRIPTIONS
                if worker_name(sub.service) in running
            ]
            local_held.drain(sqs, drained, time.monotonic() + DRAIN_SECONDS)
            self.supervisor.stop_all(names=workers)
            held_file = self._positions_dir / local_held.HELD_FILE
            kept, left = local_held.save(
                sqs, self.stage, held_file, time.monotonic() + KEEP_SECONDS
            )
        except Exception as exc:  # reported; the next start replays the streams instead
            self.say(
                f"events: could not keep the broker's messages ({exc}); the next start "
                "reads the streams again from their trim horizon"
            )
            return
        if kept or left:
            lost = f"; {left} still in flight were lost" if left else ""
            self.say(f"events: kept {kept} undelivered message(s) for the next start{lost}")

    def wait_worker(self, service: ServiceDef | str, deadline: float) -> Child:
        """Wait until the service's event worker says it polls; fail fast if it exited."""
        svc = service if isinstance(service, ServiceDef) else _service(service)
        name = worker_name(svc)
        while True:
            child = self.supervisor.child(name)
            assert child is not None
            if child.wait_for_line(lambda line: line.startswith("Worker "), 0.1) is not None:
                return child
            if not child.running:
                child.finish()
                raise StartupError(
                    f"{name} exited with {child.returncode} while starting:\n{child.tail()}"
                )
            if time.monotonic() > deadline:
                raise StartupError(f"{name} did not start polling in time:\n{child.tail()}")

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

    def reload_map(self) -> ReloadMap:
        return ReloadMap(services.ROOT, [s.name for s in self.services], SHARED_SOURCES)

    def on_source_change(self, targets: Mapping[str, str]) -> None:
        """Hot reload (called from the watcher thread): restart each touched service, after
        creating any table its new definition names (a changed ``resources.json`` or stage)."""
        if any(svc.owns_table and svc.name in targets for svc in self.services):
            try:
                created = self.create_tables(time.monotonic() + 10)
            except (StartupError, ValueError, KeyError) as exc:
                self.say(f"could not create tables for the reload: {exc}")
            else:
                if created:
                    self.say(f"created tables: {', '.join(created)}")
        for name, path in targets.items():
            # A service's worker runs the same code: it is reloaded with it.
            workers = [worker_name(svc) for svc in self.workers if svc.name == name]
            self.supervisor.request_restart([name, *workers], f"{path} changed")

    def supervise(self, until: float | None = None) -> None:
        """``make run``'s main loop: restarts, reloads and crash loops until interrupted (or
        until the monotonic time ``until``)."""
        while until is None or time.monotonic() < until:
            self.supervisor.tick()
            time.sleep(TICK_SECONDS)

    def state(self, name: str) -> State:
        return self.supervisor.state(name)

    # -- stop --

    def stop_service(self, service: ServiceDef | str, signum: int = signal.SIGTERM) -> int | None:
        """Stop one child on purpose (SIGKILL simulates a crash); the rest keep running and the
        supervisor does not restart it."""
        name = service.name if isinstance(service, ServiceDef) else service
        return self.supervisor.stop(name, signum)

    def stop(self) -> None:
        """Stop every child: SIGTERM all groups at once, SIGKILL what is left after the grace
        period. Safe to call twice and after a failed start. With the positions kept on disk
        the apps and the workers go first and the broker's messages are kept (``_keep_held``)."""
        if self._started and self._positions_kept:
            self._keep_held()
        self._started = False
        self.supervisor.stop_all()
        self.exporter.stop()
        self.docs.stop()
        if self._positions_dir is not None and not self._positions_kept:
            shutil.rmtree(self._positions_dir, ignore_errors=True)
        self._positions_dir = None
        if self._data_lock is not None:
            self._data_lock.release()
            self._data_lock = None

    def __enter__(self) -> LocalSystem:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def worker_name(service: ServiceDef) -> str:
    """The program name of ``service``'s event worker (``user_worker``)."""
    return local_events.worker_name(service.name)


POSITIONS_PREFIX = "shop-event-positions-"
# Inside DynamoDB Local's data folder: the workers' stream positions and the broker's messages
# kept at a graceful stop (``make wipe`` deletes them with the data).
EVENTS_STATE_DIR = dynamodb.EVENTS_STATE_DIR
# A graceful stop waits this long at most for the consumers to empty their queues, and this
# long for messages in flight to come back (the local visibility timeout is 2 s) to be kept.
DRAIN_SECONDS = 5.0
KEEP_SECONDS = 4.0


def _positions_dir() -> Path:
    """A new folder for this run's stream positions, named after this process; folders of runs
    that were killed without cleaning up (SIGKILL) are removed on the way."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{POSITIONS_PREFIX}*-*"):
        owner = stale.name.removeprefix(POSITIONS_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{POSITIONS_PREFIX}{os.getpid()}-", dir=base))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True


def _wiring(created: Sequence[str]) -> str:
    """``bus shop-local, 6 queues`` for what ``events.wire`` created, or that all was there."""
    if not created:
        return "bus, queues and rules present"
    queues = [name for name in created if not name.startswith("bus ")]
    parts = [name for name in created if name.startswith("bus ")]
    if queues:
        parts.append(f"{len(queues)} queue{'s' if len(queues) > 1 else ''}")
    return f"created {', '.join(parts)}; rules and targets put (tools/topology.py)"


def _has_events(service: ServiceDef) -> bool:
    return bool(topology.relays_of(service) or topology.subscriptions_of(service))


def _service(name: str) -> ServiceDef:
    for svc in services.SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"no service named {name!r}")


# --------------------------------------------------------------------------------------------
# make run


def banner(system: LocalSystem, reload: bool, run_log: Path | None = None) -> str:
    """The URLs, where the data is, and the first step of API.md's walk-through."""
    gateway = f"localhost:{system.ports.gateway}"
    engine = system.engine.label if system.engine else "an external endpoint"
    lines = [
        f"ready: stage {system.stage}; DynamoDB at {system.dynamodb_endpoint}: {engine}",
    ]
    lines += [f"  {svc.name:<12} {system.url(svc)}" for svc in system.services]
    if system.engine is not None and system.engine.persistent:
        lines.append("data survives restarts; `make wipe` deletes it")
    if system.events:
        lines.append(
            f"events: bus {topology.bus_name(system.stage)} and its queues (EventBridge + SQS, "
            f"moto, in memory) at {system.events_endpoint}"
        )
        for svc in system.workers:
            handlers = [
                *(r.handler for r in topology.relays_of(svc)),
                *(s.handler for s in topology.subscriptions_of(svc)),
            ]
            lines.append(f"  {worker_name(svc):<14} runs {', '.join(handlers)}")
        lines.append("  dead letters: `make dlq` lists them, `make dlq-replay` sends them back")
    lines.append(
        f"metrics: {system.exporter.url} (Prometheus, from the services' EMF lines; "
        "docs/observability.md)"
    )
    lines.append(docs_line(system))
    if run_log is not None:
        shown = services.shown(run_log)
        timeline = "make timeline ID=<its X-Request-Id>"
        if run_log != runlog.DEFAULT_PATH:
            timeline = f"python -m tools.timeline <its X-Request-Id> --log {run_log}"
        lines.append(f"logs: every line is kept in {shown}; one request's path: {timeline}")
    lines.append(
        "hot reload on: saving a file under a service (or lib/svckit) restarts it"
        + (" and its worker" if system.workers else "")
        if reload
        else "hot reload off"
    )
    lines += [
        "walk-through (API.md):",
        f"  curl -s -X POST {gateway}/register_user -H 'Content-Type: application/json' \\",
        '       -d \'{"username": "john_doe", "password": "correct-horse-1234"}\'',
        f"  then /login_user, /add_product with the token, and curl -s {gateway}/get_products",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def docs_line(system: LocalSystem) -> str:
    """The banner's docs line: the page's URL, or that it is off and why (npm, the port)."""
    if system.docs.url is None:
        return f"docs: off ({system.docs.off})"
    return f"docs: {system.docs.url} (Swagger UI of the gateway's /openapi.json)"


def print_env(system: LocalSystem, stream: TextIO = sys.stdout) -> None:
    """``export`` lines for running plain ``chalice local --stage local`` against the same
    DynamoDB endpoint (``make run`` or ``--without NAME`` running alongside)."""
    stream.write('# eval "$(python -m tools.localrun --print-env)"\n')
    stream.write(f"unset {' '.join(_SCRUBBED_ENV[:4])}\n")
    for key, value in system.aws_env().items():
        stream.write(f"export {key}={shlex.quote(value)}\n")
    for svc in services.SERVICES:
        stream.write(
            f"# {svc.name}: cd {svc.name} && chalice local --stage {system.stage} "
            f"--port {system.ports.of(svc)}\n"
        )
    if system.events:
        for svc in services.DATA_SERVICES:
            stream.write(
                f"# {svc.name}'s event handlers: python -m tools.local.eventworker "
                f"--service {svc.name} --stage {system.stage}\n"
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
    """Run until Ctrl-C/SIGTERM (exit 0); exit 1 when the system cannot start."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.localrun", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--print-env", action="store_true", help="print export lines and exit")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=[svc.name for svc in services.SERVICES],
        help="leave this service (and its event worker) out (run it yourself with "
        "--print-env's settings)",
    )
    parser.add_argument("--stage", default="local")
    parser.add_argument(
        "--no-reload", action="store_true", help="do not restart services when files change"
    )
    args = parser.parse_args(argv)
    try:
        ports = Ports.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    reload = not args.no_reload and os.environ.get("RELOAD", "1").strip().lower() not in (
        "0", "false", "no", "off"
    )  # fmt: skip
    for name in _SCRUBBED_ENV[:2]:
        # The runner's own boto3 (table creation) must not read a developer's AWS profile.
        os.environ.pop(name, None)
    endpoint = os.environ.get("DYNAMODB_ENDPOINT", "").strip() or None
    printer = LinePrinter()
    # Every line is also kept for tools.timeline (.local/logs/run.log, or RUN_LOG).
    run_log = RunLog(Path(os.environ.get("RUN_LOG", "").strip() or runlog.DEFAULT_PATH), printer)
    system = LocalSystem(
        ports, stage=args.stage, sink=run_log, dynamodb_endpoint=endpoint, without=args.without
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
    watcher: Watcher | None = None
    try:
        if endpoint is None:
            system.engine = dynamodb.choose(data_dir=dynamodb.data_dir_from_env(), say=printer.say)
        printer.say(f"starting {', '.join(s.name for s in system.services)} (stage {args.stage})")
        if reload:
            # Armed before anything starts, so an edit saved during startup is seen too.
            watcher = Watcher(system.reload_map(), system.on_source_change).start()
        system.start()
        if watcher is not None and not watcher.wait_ready():
            printer.say("hot reload could not watch the source folders; it is off")
            reload = False
        printer.say(banner(system, reload, run_log.path))
        system.supervise()
    except (StartupError, EngineUnavailable) as exc:
        printer.say(f"could not start: {exc}")
        code = 1
    except (KeyboardInterrupt, _Terminate):
        code = 0
    finally:
        with _signals_ignored():
            # Children first, words after: a terminal that stopped reading (Ctrl-S, a paused
            # pager) blocks every print, and must not keep the system running.
            if watcher is not None:
                watcher.stop()
            system.stop()
            run_log.close()
    printer.say("stopped", timeout=2.0)
    return code


if __name__ == "__main__":
    sys.exit(main())
