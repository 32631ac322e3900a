"""What a service wrote to its stdout, EMF lines and log lines alike, read back in a test.

The lines are taken where they really go: the stream of the service's log handler, the one the
writer thread writes to (``svckit.logs``), swapped for a buffer for the duration. So a test sees
the EMF exactly as the local runner or CloudWatch would, whole lines and all, and sees nothing
that the code under test did not write through that path.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from svckit import logs
from svckit.web import Service

WAIT = 10.0  # a bound for the writer to catch up, reached at once unless something is broken


@dataclass(frozen=True)
class Point:
    """One metric of one EMF line: what a query in CloudWatch would see of it."""

    name: str
    unit: str
    dimensions: dict[str, str]
    values: list[float]

    @property
    def total(self) -> float:
        return sum(self.values)


def points(blob: dict[str, Any]) -> list[Point]:
    found = []
    for directive in blob["_aws"]["CloudWatchMetrics"]:
        [names] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            value = blob[metric["Name"]]
            found.append(
                Point(
                    name=metric["Name"],
                    unit=metric["Unit"],
                    dimensions={name: blob[name] for name in names},
                    values=value if isinstance(value, list) else [value],
                )
            )
    return found


class Captured:
    def __init__(self, handler: logs.QueuedStreamHandler, buffer: io.StringIO) -> None:
        self.handler = handler
        self.buffer = buffer

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, each parsed as JSON (a line that is not is an error)."""
        assert self.handler.flush_queue(WAIT), "the log writer did not catch up"
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]

    def emf(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if "_aws" in line]

    def points(self, name: str | None = None) -> list[Point]:
        found = [p for blob in self.emf() for p in points(blob)]
        return [p for p in found if name is None or p.name == name]

    def clear(self) -> None:
        assert self.handler.flush_queue(WAIT)
        self.buffer.seek(0)
        self.buffer.truncate()


@contextlib.contextmanager
def captured(service: Service, warm: bool = True) -> Iterator[Captured]:
    """The lines ``service`` writes while the block runs. ``warm`` takes its cold start out of
    the way first (which test runs first in the session is not this test's business)."""
    handler = service.log.registered_handler
    assert isinstance(handler, logs.QueuedStreamHandler)
    assert handler.flush_queue(WAIT)
    if warm:
        service.metrics.cold = False
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield Captured(handler, buffer)
    finally:
        handler.flush_queue(WAIT)
        if previous is not None:
            handler.setStream(previous)
