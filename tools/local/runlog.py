"""``make run``'s log file: every child's lines, as printed, kept for ``tools.timeline``.

The terminal scrolls away; an on-call question ("what happened to request X?") needs the lines
afterwards. ``RunLog`` wraps the runner's sink: each line is appended to
``.local/logs/run.log`` as ``<program>\\t<line>`` and then passed on unchanged. The file is
rotated once it passes ``max_bytes`` (one previous file kept, ``run.log.1``), so a long run
cannot fill the disk. A failing disk never stops a line from reaching the terminal.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from tools.services import LOCAL_DIR

DEFAULT_PATH = LOCAL_DIR / "logs" / "run.log"
MAX_BYTES = 20 * 1024 * 1024
SEPARATOR = "\t"

Sink = Callable[[str, str], None]


class RunLog:
    """A sink that keeps every line in a file, then hands it to ``inner`` (if any)."""

    def __init__(self, path: Path = DEFAULT_PATH, inner: Sink | None = None,
                 max_bytes: int = MAX_BYTES) -> None:  # fmt: skip
        self.path = path
        self.inner = inner
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._size = 0

    def _open(self) -> TextIO:
        """The file, opened again when someone removed or replaced it meanwhile (``rm`` of the
        log while ``make run`` runs): writing on to the old handle would keep every later line
        where no reader can find it."""
        if self._file is not None:
            try:
                current = self.path.stat()
            except FileNotFoundError:
                current = None
            opened = os.fstat(self._file.fileno())
            if current is None or (current.st_ino, current.st_dev) != (
                opened.st_ino,
                opened.st_dev,
            ):
                self._file.close()
                self._file = None
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._size = self.path.stat().st_size
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.replace(self.path.with_name(self.path.name + ".1"))

    def __call__(self, name: str, line: str) -> None:
        record = f"{name}{SEPARATOR}{line}\n"
        size = len(record.encode("utf-8"))
        with self._lock, contextlib.suppress(OSError):
            handle = self._open()
            if self._size + size > self.max_bytes:
                self._rotate()
                handle = self._open()
            handle.write(record)
            handle.flush()
            self._size += size
        if self.inner is not None:
            self.inner(name, line)

    def say(self, text: str) -> None:
        """The runner's own messages, kept and printed like any child's."""
        for line in text.splitlines() or [""]:
            self("localrun", line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_lines(path: Path = DEFAULT_PATH) -> Iterator[tuple[str, str]]:
    """Every kept ``(program, line)``, oldest first (the rotated file before the current one)."""
    for part in (path.with_name(path.name + ".1"), path):
        if not part.exists():
            continue
        with part.open(encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                name, _, line = raw.rstrip("\n").partition(SEPARATOR)
                yield name, line
