"""Structured logs: one JSON line per event, every line of a request carrying its request id.

Powertools' Logger does the formatting. Keys are appended with its thread-safe API because the
local server answers requests on threads, where the plain ``append_keys`` would let one
request's id leak onto another's lines.

Where the lines go depends on where the code runs:

* In Lambda, the stock handler writes each line as it is logged. One invocation runs at a time,
  so nothing waits for the write, and a line written later from another thread could be frozen
  with the sandbox and lost.
* Everywhere else (the local servers, the tests) a request thread only formats its line, which
  must happen on that thread (the request id lives in its context), and queues it; one writer
  thread writes what is queued, several lines per ``write``. A local server's stdout is a pipe
  to the runner, and a pipe whose reader falls behind blocks the writer: with the stock handler
  that writer holds the handler's lock, so every request thread that logs waited behind it. The
  queue is bounded, so a reader that stops altogether still slows the server down rather than
  letting memory grow; no line is dropped either way.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from aws_lambda_powertools import Logger

from svckit import config

MAX_QUEUED_LINES = 10_000
MAX_LINES_PER_WRITE = 256
EXIT_FLUSH_SECONDS = 2.0


def in_lambda() -> bool:
    """Lambda's runtime sets this for every function; nothing else here does."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


class QueuedStreamHandler(logging.StreamHandler):
    """Formats on the logging thread, writes on one writer thread of its own.

    ``logging.Handler.handle`` would hold the handler's lock around ``emit``; this handler never
    takes it on the logging side: formatting touches only the record, and the queue does the
    locking. The writer thread starts with the first line, so importing an app starts nothing.
    """

    def __init__(self, stream: TextIO | None = None, max_lines: int = MAX_QUEUED_LINES) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self._lines: queue.Queue[str] = queue.Queue(maxsize=max_lines)
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        keep = bool(self.filter(record))
        if keep:
            self.emit(record)
        return keep

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        if self._writer is None:
            self._start_writer()
        self._lines.put(line)  # blocks only when the queue is full: the reader is far behind

    def put_lines(self, text: str) -> None:
        """Queue ``text``, whole lines ending in a newline, for the writer thread: it is written
        by one ``write``, between two log lines, never through one."""
        if self._writer is None:
            self._start_writer()
        self._lines.put(text)

    def _start_writer(self) -> None:
        with self._start_lock:
            if self._writer is None:
                writer = threading.Thread(target=self._write_forever, name="log-writer")
                writer.daemon = True  # never keeps a stopping server alive; flush() runs at exit
                writer.start()
                self._writer = writer
                atexit.register(self.flush_queue, EXIT_FLUSH_SECONDS)

    def _write_forever(self) -> None:
        while True:
            batch = [self._lines.get()]
            while len(batch) < MAX_LINES_PER_WRITE:
                try:
                    batch.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            try:
                self.stream.write("".join(batch))
                self.stream.flush()
            except Exception:  # noqa: S110 - a closed or broken stream must not end the writer,
                # or request threads would block on a full queue forever; those lines are lost
                # exactly as the stock handler would lose them.
                pass
            finally:
                for _ in batch:
                    self._lines.task_done()

    def flush_queue(self, timeout: float) -> bool:
        """Wait until every queued line is written, at most ``timeout`` seconds; True if so."""
        deadline = time.monotonic() + timeout
        while self._lines.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True


# One handler per service name: Powertools configures a logger name once and reuses it, so a
# second Logger for the same service (an app module loaded twice by the tests) must be handed
# the handler that logger already has.
_handlers: dict[str, logging.Handler] = {}
_handlers_lock = threading.Lock()


def _handler_for(service: str, stream: TextIO | None) -> logging.Handler | None:
    if in_lambda():
        return None  # Powertools' own synchronous StreamHandler
    with _handlers_lock:
        if service not in _handlers:
            _handlers[service] = QueuedStreamHandler(stream)
        return _handlers[service]


def write_lines(logger: Logger, lines: Sequence[str]) -> None:
    """Write ``lines`` (no newlines inside) where ``logger`` writes its own lines, as whole lines.

    For lines that are not log records but share their stream: CloudWatch's Embedded Metric
    Format (``svckit.metrics``) must be a line of its own, or CloudWatch reads no metric from it
    and the runner's exporter sees two broken lines. Locally they join the queue of the writer
    thread, which writes each item whole; in Lambda they are written under the handler's lock,
    which a log line from another thread (a gateway ``/health`` probe) also takes.
    """
    if not lines:
        return
    text = "".join(line + "\n" for line in lines)
    handler = logger.registered_handler
    if isinstance(handler, QueuedStreamHandler):
        handler.put_lines(text)
        return
    stream = getattr(handler, "stream", None) or sys.stdout
    handler.acquire()
    try:
        stream.write(text)
        stream.flush()
    finally:
        handler.release()


def make_logger(service: str, stream: TextIO | None = None) -> Logger:
    """The service's logger; ``stream`` (default stdout) is where its lines go."""
    return Logger(
        service=service,
        level=config.optional("LOG_LEVEL", "INFO"),
        stream=stream,
        logger_handler=_handler_for(service, stream),
    )
