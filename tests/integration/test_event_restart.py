"""A restart of ``make run`` resumes its event source mappings, it does not replay them (issue 14,
point 5): the stream positions are kept with DynamoDB Local's data, and a graceful stop keeps
what the in-memory broker (moto) still held, for the next start to send again.

Each test runs ``LocalSystem`` (the runner ``make run`` uses) twice on one data folder, as a
developer stopping and starting ``make run`` does. The relayed events are counted from each run's
own output: the relay's ``event relayed`` log line, one per event put on the bus.
(``shop_events_relayed_total`` on the run's Prometheus endpoint missed replayed events when this
was written, so the log lines are the count.)
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cpu import wait_idle
from tests.support.system import bearer, get, post, wait_until
from tools import services
from tools.local import dynamodb
from tools.local.events import held, worker_name
from tools.localrun import EVENTS_STATE_DIR, LocalSystem, Ports

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-1234"
POINTS = int(services.USER.stage_env("local")["POINTS_PER_PRODUCT"])
# Enough products that a replay of the stream (each one's record on the product table, its
# points on the user table) would keep moto and DynamoDB Local busy well past the idle check.
PRODUCTS = 150
CATCH_UP_SECONDS = 60.0
# The bound: every local process under 5% of a core within 10 s of the restart.
IDLE_SHARE = 0.05
IDLE_WITHIN_SECONDS = 10.0


@pytest.fixture
def engine(tmp_path: Path) -> dynamodb.Engine:
    chosen = dynamodb.choose(data_dir=tmp_path / "dynamodb-data", say=lambda _: None)
    if not chosen.persistent:
        pytest.skip("DynamoDB Local (Java 17+) is needed for data that survives a restart")
    return chosen


@contextmanager
def running(engine: dynamodb.Engine, lines: list[str]) -> Iterator[LocalSystem]:
    """One run of the local system on ``engine``'s data, its lines (and the runner's) collected
    in ``lines``; stopped gracefully at the end."""
    lines.clear()

    def sink(name: str, line: str) -> None:
        lines.append(f"[{name}] {line}")

    system = LocalSystem(Ports.free(), engine=engine, sink=sink)
    system.lines = lines  # type: ignore[attr-defined]
    system.start()
    try:
        yield system
    finally:
        system.stop()


def relayed(system: LocalSystem, service: str) -> int:
    """Events this run's relay of ``service`` put on the bus, from its worker's log lines."""
    prefix = f"[{worker_name(service)}] "
    return sum(
        1
        for line in list(system.lines)  # type: ignore[attr-defined]
        if line.startswith(prefix) and '"message":"event relayed"' in line
    )


def member(gateway: str, name: str) -> str:
    assert post(gateway, "/register_user", {"username": name, "password": PASSWORD}).status == 201
    return login(gateway, name)


def login(gateway: str, name: str) -> str:
    reply = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert reply.status == 200, reply
    return str(reply.json()["access_token"])


def add_products(gateway: str, token: str, ids: list[str]) -> None:
    def add(product_id: str) -> int:
        body = {"product_id": product_id, "product_name": f"Thing {product_id}"}
        return post(gateway, "/add_product", body, bearer(token)).status

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(add, ids))
    assert statuses == [201] * len(ids), statuses


def points(gateway: str, name: str) -> int:
    reply = get(gateway, f"/users/{name}")
    assert reply.status == 200, reply
    return int(reply.json()["points"])


def wait_for_points(gateway: str, name: str, expected: int) -> None:
    wait_until(lambda: points(gateway, name) >= expected, timeout=CATCH_UP_SECONDS, interval=0.2)
    assert points(gateway, name) == expected


def local_processes(system: LocalSystem) -> dict[str, int]:
    return {name: child.pid for name, child in system.children.items() if child.running}


def test_a_restart_resumes_the_streams_and_the_system_is_idle_again(
    engine: dynamodb.Engine,
) -> None:
    lines: list[str] = []
    with running(engine, lines) as first:
        gateway = first.url(services.GATEWAY)
        token = member(gateway, "resumer")
        add_products(gateway, token, [f"p{i}" for i in range(PRODUCTS)])
        wait_for_points(gateway, "resumer", PRODUCTS * POINTS)
        assert relayed(first, "product_api") >= PRODUCTS
    positions = engine.data_dir / EVENTS_STATE_DIR  # type: ignore[operator]
    assert (positions / f"{worker_name('product_api')}.json").exists()

    with running(engine, lines) as second:
        gateway = second.url(services.GATEWAY)
        assert any("resume from their stream positions" in line for line in lines), lines
        idle, shares = wait_idle(local_processes(second), IDLE_SHARE, IDLE_WITHIN_SECONDS)
        assert idle, f"CPU share of a core per process after the restart: {shares}"
        # One new product: its event goes through after anything a replay would send first
        # (a shard is read in order), so when its points are there, a replay would show.
        add_products(gateway, login(gateway, "resumer"), ["after-restart"])
        wait_for_points(gateway, "resumer", (PRODUCTS + 1) * POINTS)
        assert relayed(second, "product_api") == 1
        # user_api's relay publishes nothing for points (only registrations and deletions).
        assert relayed(second, "user_api") == 0


def test_a_graceful_stop_keeps_what_the_broker_held(engine: dynamodb.Engine) -> None:
    lines: list[str] = []
    undelivered = 12
    with running(engine, lines) as first:
        gateway = first.url(services.GATEWAY)
        token = member(gateway, "keeper")
        add_products(gateway, token, ["first"])
        wait_for_points(gateway, "keeper", POINTS)
        # The consumer side stops: what product_api's relay publishes now waits in user_api's
        # queue in moto, which forgets it when it stops.
        first.stop_service(worker_name("user_api"))
        before = relayed(first, "product_api")
        add_products(gateway, token, [f"held{i}" for i in range(undelivered)])
        wait_until(lambda: relayed(first, "product_api") >= before + undelivered, timeout=30)
        assert points(gateway, "keeper") == POINTS
    assert any(f"kept {undelivered} undelivered message(s)" in line for line in lines), lines

    with running(engine, lines) as second:
        gateway = second.url(services.GATEWAY)
        assert not (engine.data_dir / EVENTS_STATE_DIR / held.HELD_FILE).exists()  # type: ignore[operator]
        wait_for_points(gateway, "keeper", (1 + undelivered) * POINTS)
        assert relayed(second, "product_api") == 0  # sent again from the file, not the stream


def test_a_run_that_did_not_stop_gracefully_replays_the_streams(
    engine: dynamodb.Engine,
) -> None:
    """Without the file a graceful stop writes, the broker's messages may be gone (a crash, a
    SIGKILL): the positions are dropped and the streams read again, which loses nothing."""
    lines: list[str] = []
    with running(engine, lines) as first:
        gateway = first.url(services.GATEWAY)
        token = member(gateway, "crasher")
        first.stop_service(worker_name("user_api"))
        add_products(gateway, token, ["lost-with-the-broker"])
        wait_until(lambda: relayed(first, "product_api") >= 1, timeout=30)
    # What a crash leaves: the positions, and no kept messages.
    (engine.data_dir / EVENTS_STATE_DIR / held.HELD_FILE).unlink()  # type: ignore[operator]

    with running(engine, lines) as second:
        gateway = second.url(services.GATEWAY)
        assert any("did not stop cleanly" in line for line in lines), lines
        wait_for_points(gateway, "crasher", POINTS)
        assert relayed(second, "product_api") >= 1


def test_make_wipe_removes_the_positions_with_the_data(engine: dynamodb.Engine) -> None:
    lines: list[str] = []
    with running(engine, lines) as system:
        member(system.url(services.GATEWAY), "wiped")
        wait_until(lambda: relayed(system, "user_api") >= 1, timeout=30)
    data = engine.data_dir
    assert data is not None
    assert any((data / EVENTS_STATE_DIR).iterdir())
    dynamodb.wipe(data, say=lambda _: None)
    assert not data.exists()


