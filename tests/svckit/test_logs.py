"""svckit.logs: lines leave through a writer thread locally, synchronously in Lambda, and
every line keeps the request id it was logged under, whatever the stream does meanwhile."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid

import pytest

from svckit import logs

WAIT = 10.0  # a bound for waits that succeed at once unless something is broken


class GatedStream(io.StringIO):
    """A stream whose writes wait until the test opens the gate: a pipe nobody reads yet."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.writing = threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        assert self.gate.wait(WAIT), "the test never opened the gate"
        return super().write(text)


def _service() -> str:
    """A fresh logger name per test: Powertools configures each name once per process."""
    return f"svc-{uuid.uuid4().hex[:8]}"


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _handler(log) -> logs.QueuedStreamHandler:
    handler = log.registered_handler
    assert isinstance(handler, logs.QueuedStreamHandler)
    return handler


def test_a_blocked_stream_does_not_block_the_logging_thread():
    stream = GatedStream()
    log = logs.make_logger(_service(), stream=stream)

    log.info("first")
    assert stream.writing.wait(WAIT)  # the writer thread is now stuck in write()
    for n in range(50):
        log.info("more", n=n)  # returns although nothing can be written yet

    assert stream.getvalue() == ""
    stream.gate.set()
    assert _handler(log).flush_queue(WAIT)
    records = _records(stream.getvalue())
    assert [r["message"] for r in records] == ["first"] + ["more"] * 50
    assert [r["n"] for r in records[1:]] == list(range(50))


def test_each_line_keeps_the_request_id_it_was_logged_under():
    """Formatting happens on the logging thread, before the keys change."""
    stream = GatedStream()
    log = logs.make_logger(_service(), stream=stream)

    for request_id in ("a", "b", "c"):
        log.thread_safe_append_keys(request_id=request_id)
        log.info("request")
        log.thread_safe_clear_keys()
    log.info("after")
    stream.gate.set()

    assert _handler(log).flush_queue(WAIT)
    assert [r.get("request_id") for r in _records(stream.getvalue())] == ["a", "b", "c", None]


def test_threads_logging_at_once_never_interleave_within_a_line():
    stream = io.StringIO()
    log = logs.make_logger(_service(), stream=stream)

    def worker(name: str) -> None:
        for n in range(200):
            log.info("line", worker=name, n=n, padding="x" * 500)

    threads = [threading.Thread(target=worker, args=(str(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert _handler(log).flush_queue(WAIT)
    records = _records(stream.getvalue())
    assert len(records) == 800
    for name in "0123":
        assert [r["n"] for r in records if r["worker"] == name] == list(range(200))


class FlakyStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def write(self, text: str) -> int:
        if self.failures:
            self.failures -= 1
            raise BrokenPipeError("reader went away")
        return super().write(text)


def test_a_failing_write_does_not_end_the_writer():
    stream = FlakyStream()
    log = logs.make_logger(_service(), stream=stream)

    log.info("lost")
    assert _handler(log).flush_queue(WAIT)
    log.info("kept")

    assert _handler(log).flush_queue(WAIT)
    assert [r["message"] for r in _records(stream.getvalue())] == ["kept"]


def test_a_full_queue_makes_the_logger_wait_not_drop():
    stream = GatedStream()
    handler = logs.QueuedStreamHandler(stream, max_lines=2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(_service())
    log.propagate = False
    log.addHandler(handler)
    log.warning("0")
    assert stream.writing.wait(WAIT)  # "0" is being written; the queue holds up to 2 more
    log.warning("1")
    log.warning("2")

    third = threading.Thread(target=log.warning, args=("3",))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # waiting for room, not dropped

    stream.gate.set()
    third.join(WAIT)
    assert handler.flush_queue(WAIT)
    assert stream.getvalue().split() == ["0", "1", "2", "3"]


def test_the_same_service_gets_the_same_handler():
    """Powertools sets a logger name up once; a second Logger for it (an app module loaded
    again) must format with the handler that is attached, not a new unattached one."""
    name = _service()
    first, second = logs.make_logger(name), logs.make_logger(name)
    assert first.registered_handler is second.registered_handler
    assert second.registered_formatter is not None


def test_in_lambda_lines_are_written_as_they_are_logged(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "product_api-dev")
    stream = io.StringIO()
    log = logs.make_logger(_service(), stream=stream)

    log.info("now")

    assert not isinstance(log.registered_handler, logs.QueuedStreamHandler)
    assert _records(stream.getvalue())[0]["message"] == "now"
