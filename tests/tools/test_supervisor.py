"""The supervisor with real child processes: restart with backoff, crash loops left down alone,
restarts asked for from another thread (hot reload), and an orderly stop.

Children are tiny Python processes (exit at once, or sleep), so each test takes a moment; the
policy's delays are shrunk, and the loop is driven by calling ``tick`` as ``make run`` does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tools.local.supervisor import Program, RestartPolicy, State, Supervisor

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
FAST = RestartPolicy(initial_delay=0.05, max_delay=0.2, crash_limit=3, crash_window=60.0)


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def make_supervisor(said: list[str]) -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def _make(policy: RestartPolicy = FAST, **programs: list[str]) -> Supervisor:
        supervisor = Supervisor(lambda: dict(os.environ), None, said.append, policy=policy)
        for name, argv in programs.items():
            supervisor.add(Program(name, lambda argv=argv: argv))
            supervisor.start(name)
        made.append(supervisor)
        return supervisor

    yield _make
    for supervisor in made:
        supervisor.stop_all(grace=2.0)


def _tick_until(supervisor: Supervisor, done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        supervisor.tick()
        time.sleep(0.01)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(initial_delay=0.5, max_delay=8.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_a_crashing_child_is_restarted_then_left_down_while_the_others_run(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    supervisor = make_supervisor(crasher=CRASH, steady=SLEEP)
    steady_pid = supervisor.child("steady").pid

    _tick_until(supervisor, lambda: supervisor.state("crasher") is State.FAILED)

    restarts = [line for line in said if line.startswith("crasher restarted")]
    assert len(restarts) == 2  # started once, restarted twice, the third exit is the limit
    assert "crasher exited with status 3; restarting in 0.05 s" in said[0]
    assert "restarting in 0.1 s" in said[2]
    assert "3 times in 60 s: leaving it down" in said[-1]
    # Down for good, and the other program never noticed.
    for _ in range(20):
        supervisor.tick()
    assert supervisor.state("crasher") is State.FAILED
    assert supervisor.programs["crasher"].restarts == 2
    assert supervisor.state("steady") is State.RUNNING
    assert supervisor.child("steady").pid == steady_pid
    assert supervisor.child("steady").running


def test_staying_up_resets_the_backoff_but_not_the_crash_loop_count(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    """A service that dies every 11 s dies five times a minute: the crash-loop limit counts
    exits in the window, while staying up only starts the backoff from the beginning."""
    forgiving = RestartPolicy(initial_delay=0.01, crash_limit=4, stable_seconds=0.0)
    supervisor = make_supervisor(forgiving, crasher=CRASH)

    _tick_until(supervisor, lambda: supervisor.state("crasher") is State.FAILED)

    delays = [line for line in said if "restarting in" in line]
    assert all("restarting in 0.01 s" in line for line in delays), delays
    assert "(3 exits in the last 60 s)" in delays[-1]
    assert "4 times in 60 s" in said[-1]


def test_a_program_that_cannot_even_start_counts_as_exiting(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    supervisor = make_supervisor(steady=SLEEP)
    supervisor.add(Program("ghost", lambda: ["/nonexistent/binary"]))
    program = supervisor.programs["ghost"]
    program.state, program.restart_at = State.BACKOFF, 0.0

    _tick_until(supervisor, lambda: supervisor.state("ghost") is State.FAILED)

    assert "ghost exited with a failure to start" in said[0]
    assert supervisor.child("steady").running


def test_a_restart_request_from_another_thread_replaces_the_process(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    supervisor = make_supervisor(steady=SLEEP, other=SLEEP)
    before = supervisor.child("steady").pid
    other = supervisor.child("other").pid

    thread = threading.Thread(
        target=supervisor.request_restart, args=(["steady"], "app.py changed")
    )
    thread.start()
    thread.join()
    supervisor.tick()

    assert supervisor.child("steady").pid != before
    assert supervisor.child("steady").running
    assert supervisor.child("other").pid == other
    assert said == ["reloading steady (app.py changed)"]


def test_a_reload_gives_a_crash_looped_program_a_fresh_start(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    supervisor = make_supervisor(crasher=CRASH)
    _tick_until(supervisor, lambda: supervisor.state("crasher") is State.FAILED)

    supervisor.request_restart(["crasher"], "fixed.py changed")
    supervisor.tick()

    assert "reloading crasher (fixed.py changed)" in said
    assert supervisor.state("crasher") is State.RUNNING
    assert list(supervisor.programs["crasher"].exits) == []


def test_a_reload_also_retries_a_crash_looped_program_no_file_maps_to(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    supervisor = make_supervisor(engine=CRASH, service=SLEEP)
    _tick_until(supervisor, lambda: supervisor.state("engine") is State.FAILED)

    supervisor.request_restart(["service"], "app.py changed")
    supervisor.tick()

    assert "reloading engine (retrying after its crash loop)" in said
    assert supervisor.state("engine") is not State.FAILED


def test_a_program_stopped_on_purpose_is_not_restarted(
    make_supervisor: Callable[..., Supervisor], said: list[str]
) -> None:
    supervisor = make_supervisor(steady=SLEEP)

    supervisor.stop("steady")
    for _ in range(10):
        supervisor.tick()

    assert supervisor.state("steady") is State.STOPPED
    assert not supervisor.child("steady").running
    assert said == []


def test_stop_all_ends_every_child(make_supervisor: Callable[..., Supervisor]) -> None:
    supervisor = make_supervisor(a=SLEEP, b=SLEEP)
    children = [supervisor.child("a"), supervisor.child("b")]

    supervisor.stop_all(grace=2.0)

    assert all(child is not None and not child.running for child in children)
