"""``make run``'s output: every child's lines prefixed with its name, never interleaved."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import TextIO

COLORS = {
    "localrun": "1",
    "dynamodb": "35",
    "user_api": "36",
    "product_api": "33",
    "gateway_api": "32",
    "events": "34",
    "user_worker": "96",
    "product_worker": "93",
}


class LinePrinter:
    """The sink ``make run`` uses: ``[name] line``, name coloured on a terminal, whole lines
    written under one lock so concurrent children never interleave mid-line."""

    def __init__(self, stream: TextIO = sys.stdout, color: bool | None = None) -> None:
        self.stream = stream
        if color is None:
            color = stream.isatty() and not os.environ.get("NO_COLOR")
        self.color = color
        self.width = max(len(name) for name in COLORS)
        self._lock = threading.Lock()

    def __call__(self, name: str, line: str, timeout: float = -1) -> None:
        """Write one line; with ``timeout``, give up (drop the line) rather than wait longer for
        a terminal that stopped reading."""
        label = f"[{name}]".ljust(self.width + 2)
        if self.color:
            label = f"\033[{COLORS.get(name, '37')}m{label}\033[0m"
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            with contextlib.suppress(OSError, ValueError):
                # A closed terminal or pipe must not kill the reader thread: the child would
                # then block on a full pipe. Its lines are still kept by Child.
                self.stream.write(f"{label} {line}\n")
                self.stream.flush()
        finally:
            self._lock.release()

    def say(self, text: str, timeout: float = -1) -> None:
        """The runner's own messages; each line of a multi-line one gets the prefix."""
        for line in text.splitlines() or [""]:
            self("localrun", line, timeout)
