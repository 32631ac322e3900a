"""Upstream connections that keep one total deadline per call and know when they were reused.

Why a deadline needs more than urllib3's timeouts: those bound each socket operation, not a call.
A service that sends one byte every 4 s never lets a 5 s read timeout expire, in its status line,
its headers or its body, and ``Timeout(total=...)`` only caps each read at what was left when the
headers were first awaited. So a call holds a :class:`Deadline`, and one watchdog thread shuts
down the socket of any call still running past it: shutting a socket down is the one way to end
a read already blocked in another thread, and the blocked read then returns at once (as an end of
stream), which the caller reports as the service timing out because :attr:`Deadline.expired` says
so. One thread for every call, woken a few times a second only while calls are running, rather
than a timer thread per call: the gateway makes one call per request and should not start a
thread for each.

Why connections count their answers: a keep-alive connection that the service closes just as
the next request goes out fails before any byte of an answer comes back, which for a GET is
safe to send again on a fresh connection (see ``upstream.call``). The connection knows whether
it was reused (it has answered before on the same socket); urllib3 does not say.

The pool classes are urllib3's own with these connection classes (``ConnectionCls``, the
documented way to change a pool's connections); the HTTP exchange itself is unchanged.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# How often the watchdog looks at running calls: a call overruns its deadline by at most this.
TICK_SECONDS = 0.05


class Deadline:
    """One upstream call's end time, and what happened to the try in flight."""

    __slots__ = ("_connection", "answered", "at", "expired", "reused")

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False  # set by the watchdog: the call used its whole budget
        self.reused = False  # the current try went out on a connection that had answered before
        self.answered = False  # the current try has read an answer's status line and headers
        self._connection: HTTPConnection | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()


# The call running on this thread (or in this probe's context): how a connection, deep inside
# urllib3, finds the deadline it must keep.
current: ContextVar[Deadline | None] = ContextVar("upstream_deadline", default=None)


def _shut(connection: HTTPConnection) -> None:
    """End any read or write on ``connection`` now, from any thread.

    ``socket.socket.shutdown`` rather than the socket's own method: on a TLS socket the latter
    also drops the TLS state under the reading thread's feet; the plain shutdown only ends the
    stream, and the read sees an end of stream.
    """
    sock = connection.sock
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed: nothing left to interrupt
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """Shuts down the connection of every call that is still running past its deadline."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running: set[Deadline] = set()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, deadline: Deadline) -> Iterator[None]:
        """Keep ``deadline`` for the block, and make it current for the connections in it.

        After the block the deadline can no longer touch the connection, which may by then
        serve another call from the pool.
        """
        token = current.set(deadline)
        with self._changed:
            self._running.add(deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="upstream-deadlines", daemon=True
                )
                self._thread.start()
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                self._running.discard(deadline)
                deadline._connection = None
            current.reset(token)

    def attach(self, deadline: Deadline, connection: HTTPConnection) -> None:
        """``connection`` now carries the call's current try."""
        with self._changed:
            deadline._connection = connection
            if deadline.expired:
                _shut(connection)

    def _run(self) -> None:
        with self._changed:
            while True:
                if not self._running:
                    self._changed.wait()
                    continue
                now = time.monotonic()
                for deadline in [d for d in self._running if d.at <= now]:
                    deadline.expired = True
                    self._running.discard(deadline)
                    if deadline._connection is not None:
                        _shut(deadline._connection)
                self._changed.wait(TICK_SECONDS)


watchdog = _Watchdog()


class _Tracked:
    """Mixed into urllib3's connections: attach each try to the current deadline, and count
    the answers read on the current socket (a new or reconnected socket starts at zero)."""

    _answers = 0

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._answers = 0

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        self._answers = 0

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline = current.get()
        if deadline is not None:
            deadline.reused = getattr(self, "sock", None) is not None and self._answers > 0
            deadline.answered = False
            watchdog.attach(deadline, self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> Any:
        deadline = current.get()
        if deadline is not None and deadline.expired:
            # Expired while connecting or sending, before the socket could be shut down:
            # do it now, so the read below ends at once instead of after its own timeout.
            _shut(self)  # type: ignore[arg-type]
        response = super().getresponse()  # type: ignore[misc]
        self._answers += 1
        if deadline is not None:
            deadline.answered = True
        return response


class TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = TrackedHTTPSConnection


def pool_manager(**settings: Any) -> urllib3.PoolManager:
    """A ``PoolManager`` whose connections keep the current call's deadline."""
    manager = urllib3.PoolManager(**settings)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager
