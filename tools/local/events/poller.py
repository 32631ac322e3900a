"""What every poller shares: a thread's loop around one poll step, errors logged (once, then at
most every ``REPEAT_ERROR_SECONDS``) and retried with a short backoff, so an endpoint that goes
away (moto restarting) never ends the thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

ERROR_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)
# A poller that keeps failing the same way says so again at most this often.
REPEAT_ERROR_SECONDS = 30.0


Say = Callable[[str], None]


class _Trouble:
    """A poller's errors, said once and then at most every ``REPEAT_ERROR_SECONDS`` while they
    last (an endpoint down for a minute must not fill the screen), and the recovery said too."""

    def __init__(self, name: str, say: Say) -> None:
        self.name = name
        self.say = say
        self.failures = 0
        self._last_text = ""
        self._last_said = 0.0

    def failed(self, what: str, exc: BaseException) -> float:
        """Record one failure; return how long to wait before the next try."""
        self.failures += 1
        text = f"{what}: {type(exc).__name__}: {exc}".strip()
        now = time.monotonic()
        if text != self._last_text or now - self._last_said > REPEAT_ERROR_SECONDS:
            self.say(f"{self.name}: {text} (retrying)")
            self._last_text, self._last_said = text, now
        return ERROR_BACKOFF_SECONDS[min(self.failures, len(ERROR_BACKOFF_SECONDS)) - 1]

    def ok(self) -> None:
        if self.failures:
            self.say(f"{self.name}: working again after {self.failures} failed attempts")
        self.failures = 0
        self._last_text = ""


class Poller:
    """A thread's loop around ``poll_once``: errors are logged and retried with a short
    backoff, so an endpoint that goes away (moto restarting) never ends the thread."""

    name: str

    def __init__(self, name: str, say: Say) -> None:
        self.name = name
        self.say = say
        self.trouble = _Trouble(name, say)

    def poll_once(self) -> bool:
        """One step; True when there may be more to do at once (skip the idle wait)."""
        raise NotImplementedError

    def idle_seconds(self) -> float:
        return 0.0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.poll_once()
            except Exception as exc:  # any failure, whatever it is, is this loop's to outlast
                if stop.is_set():
                    return  # stopping, and the endpoints may be stopping too: nothing to say
                stop.wait(self.trouble.failed("polling failed", exc))
                continue
            self.trouble.ok()
            if not busy:
                stop.wait(self.idle_seconds())

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=self.name, daemon=True)
        thread.start()
        return thread
