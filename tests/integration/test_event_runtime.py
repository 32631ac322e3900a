"""The event runtime of ``make run`` as ``LocalSystem`` runs it: the events endpoint (moto's
EventBridge and SQS) and one event worker per data service, supervised like the servers.

Checked here: a product added through the gateway earns its creator points through the whole
path (stream, relay, bus, rule, queue, consumer); a killed worker is restarted by the
supervisor; a saved file under a service reloads its worker with it and leaves the other
worker alone; a restarted events program is wired again from the topology and the workers are
restarted, after which events flow again. The supervisor's loop is driven here by calling
``tick`` as ``make run``'s main loop does.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.system import bearer, get, post
from tools import services, topology
from tools.local import events as local_events
from tools.local.reload import Watcher
from tools.local.supervisor import RestartPolicy, State
from tools.localrun import EVENTS, LocalSystem, Ports, StartupError, worker_name

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-1234"
FLOW_SECONDS = 30.0  # generous: a bound for the test, not a speed target
USER_WORKER = worker_name(services.USER)
PRODUCT_WORKER = worker_name(services.PRODUCT)


class Lines:
    """The system's sink: every child's line and the runner's own, kept for assertions."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, name: str, line: str) -> None:
        self.lines.append((name, line))

    def said(self, fragment: str, name: str | None = None) -> bool:
        return any(fragment in text for who, text in list(self.lines) if name in (None, who))


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[LocalSystem, Lines]]:
    lines = Lines()
    system = LocalSystem(
        Ports.free(), sink=lines, policy=RestartPolicy(initial_delay=0.1, max_delay=0.5)
    )
    system.start()
    try:
        yield system, lines
    finally:
        system.stop()


def drive(system: LocalSystem, done: Callable[[], Any], timeout: float = FLOW_SECONDS) -> Any:
    """Run the supervisor's loop until ``done()`` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        system.supervisor.tick()
        value = done()
        if value:
            return value
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def _pid(system: LocalSystem, name: str) -> int | None:
    child = system.supervisor.child(name)
    return child.pid if child is not None and child.running else None


REGISTERED: list[str] = []  # every user this module registered: one UserRegistered each


def _member(gateway: str) -> tuple[str, str]:
    name = f"ev_{uuid.uuid4().hex[:8]}"
    assert post(gateway, "/register_user", {"username": name, "password": PASSWORD}).status == 201
    REGISTERED.append(name)
    login = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert login.status == 200, login
    return name, str(login.json()["access_token"])


def _points(gateway: str, name: str, token: str) -> int:
    reply = get(gateway, f"/users/{name}", bearer(token))
    assert reply.status == 200, reply
    return int(reply.json()["points"])


def _points_after_a_product(system: LocalSystem) -> None:
    """Register, add a product, and see the creator's points rise by POINTS_PER_PRODUCT."""
    gateway = system.url(services.GATEWAY)
    name, token = _member(gateway)
    before = _points(gateway, name, token)
    product = {"product_id": uuid.uuid4().hex[:12], "product_name": "Laptop"}
    added = post(gateway, "/add_product", product, bearer(token))
    assert added.status == 201, added
    per_product = int(services.USER.stage_env(system.stage)["POINTS_PER_PRODUCT"])

    drive(system, lambda: _points(gateway, name, token) == before + per_product)


def _relayed_registrations(system: LocalSystem) -> int:
    """How many UserRegistered events the current user_worker process has relayed."""
    child = system.supervisor.child(USER_WORKER)
    assert child is not None
    return sum('"event relayed"' in line and "UserRegistered" in line for line in child.lines())


def test_a_product_added_earns_its_creator_points_through_the_events(running):
    system, lines = running

    _points_after_a_product(system)

    # The workers' log lines trail the change they describe through a pipe and a thread.
    drive(system, lambda: lines.said('"message":"event relayed"', PRODUCT_WORKER))
    drive(system, lambda: lines.said('"message":"event consumed"', USER_WORKER))


def test_a_killed_worker_is_restarted_by_the_supervisor(running):
    system, lines = running
    before = _pid(system, USER_WORKER)
    assert before is not None

    os.kill(before, signal.SIGKILL)

    drive(system, lambda: lines.said(f"{USER_WORKER} restarted"))
    drive(system, lambda: system.supervisor.child(USER_WORKER).wait_for_line(
        lambda line: line.startswith("Worker "), 0.1
    ))  # fmt: skip
    assert lines.said(f"{USER_WORKER} exited with signal 9")
    assert system.state(USER_WORKER) is State.RUNNING
    assert _pid(system, USER_WORKER) not in (None, before)
    _points_after_a_product(system)


def test_a_save_under_a_service_reloads_its_worker_with_it(running):
    system, lines = running
    before = {name: _pid(system, name) for name in (USER_WORKER, PRODUCT_WORKER, "user_api")}
    watcher = Watcher(system.reload_map(), system.on_source_change).start()
    try:
        assert watcher.wait_ready()
        os.utime(services.USER.directory / "app.py")  # a save without a content change

        drive(
            system,
            lambda: all(
                _pid(system, name) not in (None, before[name]) for name in ("user_api", USER_WORKER)
            ),
        )
    finally:
        watcher.stop()
    assert lines.said(f"reloading {USER_WORKER} (user_api/app.py changed)")
    assert _pid(system, PRODUCT_WORKER) == before[PRODUCT_WORKER]
    system.wait_healthy(services.USER, time.monotonic() + 30)
    system.wait_worker(services.USER, time.monotonic() + 30)
    _points_after_a_product(system)
    # The reloaded worker went on from its stream position, as an event source mapping does
    # across deployments: only the registration made since was relayed, none again. (Its log
    # lines are in stream order, so any old one would have come before the new one.)
    drive(system, lambda: _relayed_registrations(system) >= 1)
    assert _relayed_registrations(system) == 1


def test_a_restarted_events_program_is_wired_again_and_events_flow(running):
    system, lines = running
    events_pid = _pid(system, EVENTS)
    workers = {name: _pid(system, name) for name in (USER_WORKER, PRODUCT_WORKER)}
    assert events_pid is not None

    os.kill(events_pid, signal.SIGKILL)  # moto forgets the bus, the queues and the rules

    drive(system, lambda: lines.said("events wired again"))
    sqs = local_events.client("sqs", system.events_endpoint)
    for sub in topology.SUBSCRIPTIONS:
        for name in (sub.queue_name(system.stage), sub.dead_letter_queue_name(system.stage)):
            assert sqs.get_queue_url(QueueName=name)["QueueUrl"]
    for relay in topology.RELAYS:
        assert sqs.get_queue_url(QueueName=relay.failure_queue_name(system.stage))["QueueUrl"]
    rules = local_events.client("events", system.events_endpoint).list_rules(
        EventBusName=topology.bus_name(system.stage)
    )["Rules"]
    assert {r["Name"] for r in rules} == {s.rule_name(system.stage) for s in topology.SUBSCRIPTIONS}
    # The workers are restarted, so the relays read their streams again and publish anew
    # whatever the lost queues held.
    drive(
        system,
        lambda: all(_pid(system, name) not in (None, pid) for name, pid in workers.items()),
    )
    for svc in services.DATA_SERVICES:
        system.wait_worker(svc, time.monotonic() + 30)
    # With the queues lost, the relays read their streams from the start again: every
    # registration so far is published again (the consumers apply each id once).
    drive(system, lambda: _relayed_registrations(system) >= len(REGISTERED))
    _points_after_a_product(system)


def test_the_workers_outlast_a_restart_of_the_dynamodb_engine(running):
    system, lines = running
    engine_pid = _pid(system, "dynamodb")
    workers = {name: _pid(system, name) for name in (USER_WORKER, PRODUCT_WORKER)}
    assert engine_pid is not None

    # In memory here: the restarted engine has new tables, hence new streams, made by the runner.
    os.kill(engine_pid, signal.SIGKILL)

    drive(system, lambda: lines.said("created tables again"))
    # The pollers said what failed while it was down, kept trying, and found the new streams.
    drive(system, lambda: lines.said("has a new stream; reading it from the start", USER_WORKER))
    drive(system, lambda: lines.said("has a new stream; reading it from the start", PRODUCT_WORKER))
    assert {name: _pid(system, name) for name in workers} == workers  # the same processes
    _points_after_a_product(system)


def test_a_busy_events_port_is_named_before_anything_starts():
    ports = Ports.free()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.events))
        taken.listen()
        system = LocalSystem(ports)

        with pytest.raises(StartupError, match=f"events port {ports.events} \\(set EVENTS_PORT\\)"):
            system.start()

    assert all(program.child is None for program in system.supervisor.programs.values())
