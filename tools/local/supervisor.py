"""Supervision: a child that exits unexpectedly is restarted with backoff; the rest run on.

One ``Program`` per process (DynamoDB engine, each service). The supervisor's ``tick`` runs in
the runner's main thread (children must be forked there, see ``process._parent_death_signal``)
and does three things:

* notices unexpected exits, logs them with their status, and schedules a restart after an
  exponential backoff (0.5 s, 1 s, 2 s, ... capped);
* gives up on a program that crash-loops (``crash_limit`` exits within ``crash_window``
  seconds), leaving it down with a clear message while everything else keeps serving; a reload
  (a saved file) or a restart of the runner gives it a fresh start;
* performs restarts asked for by other threads (hot reload) through a queue, so those threads
  never fork.

A program's ``after_start`` hook (the engine's table creation) runs on a helper thread: it
waits on the network and must not stall the loop.
"""

from __future__ import annotations

import enum
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.local.process import STOP_GRACE_SECONDS, Child, Sink, describe_exit


class State(enum.Enum):
    RUNNING = "running"
    BACKOFF = "waiting to restart"
    FAILED = "down (crash loop)"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart and when to give up. A child that stayed up ``stable_seconds`` starts
    the next backoff from the beginning; the crash-loop count is over the window regardless,
    so a service dying every 11 s is still five exits a minute."""

    initial_delay: float = 0.5
    max_delay: float = 8.0
    crash_limit: int = 5
    crash_window: float = 60.0
    stable_seconds: float = 10.0

    def delay(self, quick_exits: int) -> float:
        return min(self.max_delay, self.initial_delay * 2 ** max(quick_exits - 1, 0))


@dataclass
class Program:
    """One supervised process: how to start it and what it has done lately."""

    name: str
    argv: Callable[[], Sequence[str]]
    after_start: Callable[[Child], None] | None = None
    child: Child | None = None
    state: State = State.STOPPED
    exits: deque[float] = field(default_factory=deque)  # unexpected exits, for the window
    quick_exits: int = 0  # exits in a row without staying up: the backoff's exponent
    restart_at: float = 0.0
    restarts: int = 0


class Supervisor:
    """Starts, watches, restarts and stops a set of named programs."""

    def __init__(
        self,
        env: Callable[[], Mapping[str, str]],
        sink: Sink | None,
        say: Callable[[str], None],
        policy: RestartPolicy | None = None,
        cwd: Path | None = None,
    ) -> None:
        self._env = env
        self._sink = sink
        self._say = say
        self.policy = policy or RestartPolicy()
        self._cwd = cwd
        self.programs: dict[str, Program] = {}
        self._requests: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    # -- registry --

    def add(self, program: Program) -> Program:
        self.programs[program.name] = program
        return program

    def child(self, name: str) -> Child | None:
        return self.programs[name].child

    def state(self, name: str) -> State:
        return self.programs[name].state

    # -- starting and stopping (main thread) --

    def start(self, name: str) -> Child:
        """Start ``name`` now; it must not be running."""
        program = self.programs[name]
        if program.child is not None and program.child.running:
            raise RuntimeError(f"{name} is already running")
        if program.child is not None:
            program.child.finish()
        child = Child(name, program.argv(), self._env(), self._sink, cwd=self._cwd)
        program.child = child
        program.state = State.RUNNING
        if program.after_start is not None:
            hook = program.after_start
            threading.Thread(
                target=self._run_hook, args=(name, hook, child), name=f"after-{name}", daemon=True
            ).start()
        return child

    def _run_hook(self, name: str, hook: Callable[[Child], None], child: Child) -> None:
        try:
            hook(child)
        except Exception as exc:  # reported, never fatal: the supervisor restarts the child
            self._say(f"{name}: {exc}")

    def stop(self, name: str, signum: int = signal.SIGTERM) -> int | None:
        """Stop ``name`` on purpose (SIGKILL simulates a crash without a restart)."""
        program = self.programs[name]
        program.state = State.STOPPED
        child = program.child
        if child is None:
            return None
        if signum == signal.SIGTERM:
            return child.stop()
        child.signal_group(signum)
        code = child.wait(STOP_GRACE_SECONDS)
        child.finish()
        return code

    def stop_all(
        self, grace: float = STOP_GRACE_SECONDS, names: Iterable[str] | None = None
    ) -> None:
        """SIGTERM every group at once, SIGKILL what is left after ``grace``. Safe to repeat.
        ``names`` stops only those (a graceful stop of the runner stops the apps, then the
        workers, before the broker)."""
        wanted = None if names is None else set(names)
        programs = [p for p in self.programs.values() if wanted is None or p.name in wanted]
        for program in programs:
            program.state = State.STOPPED
        for program in reversed(programs):
            if program.child is not None:
                program.child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for program in programs:
            child = program.child
            if child is None:
                continue
            if child.wait(deadline - time.monotonic()) is None:
                child.signal_group(signal.SIGKILL)
                child.process.wait()
            child.finish()

    # -- requests from other threads --

    def request_restart(self, names: Iterable[str], reason: str) -> None:
        """Ask the main loop to restart ``names`` (hot reload); safe from any thread."""
        for name in names:
            self._requests.put((name, reason))

    # -- the loop --

    def tick(self, now: float | None = None) -> None:
        """One pass: restarts asked for, exits noticed, backoffs that have run out."""
        now = time.monotonic() if now is None else now
        self._apply_requests(now)
        for program in self.programs.values():
            if program.state is State.RUNNING and program.child and not program.child.running:
                child = program.child
                code = child.returncode
                child.finish()
                self._exited(program, now, describe_exit(code), child.started_at, child.tail(15))
            if program.state is State.BACKOFF and now >= program.restart_at:
                program.restarts += 1
                started = self._try_start(program, now)
                if started is not None:
                    self._say(f"{program.name} restarted (pid {started.pid})")

    def _try_start(self, program: Program, now: float) -> Child | None:
        """Start ``program``; a failure to start at all (its binary gone, no memory for a fork)
        counts as one more exit of that program, never as the end of the supervisor."""
        try:
            return self.start(program.name)
        except Exception as exc:
            program.child = None
            program.state = State.RUNNING  # so that _exited moves it on, as for any exit
            self._exited(program, now, f"a failure to start ({exc})", now, "")
            return None

    def _apply_requests(self, now: float) -> None:
        wanted: dict[str, str] = {}
        while True:
            try:
                name, reason = self._requests.get_nowait()
            except queue.Empty:
                break
            program = self.programs.get(name)
            if program is not None and program.state is not State.STOPPED:
                wanted.setdefault(name, reason)
        if not wanted:
            return
        # A save is how the crash-loop message says to retry: programs no file maps to (the
        # database engine) get their fresh start with it too.
        for program in self.programs.values():
            if program.state is State.FAILED and program.name not in wanted:
                wanted[program.name] = "retrying after its crash loop"
        for name, reason in wanted.items():
            self._say(f"reloading {name} ({reason})")
        # Stop them all at once and wait once: a hung one must not hold up the others' restarts
        # (nor, for long, the loop noticing other exits).
        children = [self.programs[n].child for n in wanted if self.programs[n].child is not None]
        for child in children:
            assert child is not None
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            assert child is not None
            if child.wait(deadline - time.monotonic()) is None:
                child.signal_group(signal.SIGKILL)
                child.process.wait()
            child.finish()
        for name in wanted:
            program = self.programs[name]
            program.exits.clear()  # new code gets a fresh chance, even after a crash loop
            program.quick_exits = 0
            self._try_start(program, now)

    def _exited(
        self, program: Program, now: float, how: str, started_at: float, tail: str
    ) -> None:
        if now - started_at >= self.policy.stable_seconds:
            program.quick_exits = 0
        program.quick_exits += 1
        program.exits.append(now)
        while program.exits and now - program.exits[0] > self.policy.crash_window:
            program.exits.popleft()
        recent = len(program.exits)
        window = f"{self.policy.crash_window:g} s"
        if recent >= self.policy.crash_limit:
            program.state = State.FAILED
            self._say(
                f"{program.name} exited with {how}, {recent} times in {window}: leaving it "
                f"down, the rest keep running. Fix it and save a source file to retry (hot "
                f"reload), or restart make run." + (f"\n{_indent(tail)}" if tail else "")
            )
            return
        delay = self.policy.delay(program.quick_exits)
        program.state = State.BACKOFF
        program.restart_at = now + delay
        self._say(
            f"{program.name} exited with {how}; restarting in {delay:g} s "
            f"({recent} exit{'s' if recent > 1 else ''} in the last {window})"
        )


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
