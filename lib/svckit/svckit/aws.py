"""How every AWS client in the services times out and retries: defined once, here.

The budget is set by what waits for the function. The gateway gives a service 5 s to answer
(``UPSTREAM_READ_TIMEOUT``), and a service's Lambda timeout is 10 s. One call may therefore take
at most ``WORST_CASE_SECONDS``: two attempts of a 0.5 s connect and a 1 s read, plus botocore's
standard backoff before the retry (up to 1 s). DynamoDB answers in milliseconds, so a second
missing almost always means a lost connection, which one retry fixes.

A retry re-sends a write whose first attempt may have been stored (the answer was lost, not the
request), so every write the services make is safe to repeat (``svckit.dynamo``): conditional
inserts recognise their own earlier attempt, increments run once per ``ClientRequestToken``.
"""

from __future__ import annotations

from botocore.config import Config

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 1.0
ATTEMPTS = 2  # the first try and one retry
FIRST_RETRY_MAX_BACKOFF = 1.0  # botocore standard mode: random(0, 1) * 2 ** 0 seconds
WORST_CASE_SECONDS = ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + FIRST_RETRY_MAX_BACKOFF


def client_config() -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
    )
