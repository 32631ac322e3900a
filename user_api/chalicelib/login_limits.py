"""Limits on failed logins, per username and per source address, in short fixed windows.

API Gateway's stage throttling is per method, so on its own it lets one client spend the whole
``POST /login`` rate guessing one user's password. Here each failed login is counted twice, for
the name and for the address API Gateway saw, and a login whose name or address has reached its
limit in the current window is refused with 429 *before* the password is checked: no Argon2 work
for it, and no answer that would differ for the right password (which would tell a guesser it was
right). The defaults are 5 failures per name and 20 per address per 5-minute window.

Why fixed windows: a counter is one item whose key holds the window's start, so a new window
starts from zero without any reset write, the lock-out ends by itself at the latest when the window
does, and DynamoDB's TTL (``expires_at``, the window's end) deletes old counters. The cost is that
a guesser can place up to twice the limit around a window boundary; the rate stays bounded.

The access pattern is one ``BatchGetItem`` of both counters (strongly consistent) before the
password check and, only for a wrong password, one ``UpdateItem`` per counter
(``ADD attempts :one``), which is atomic: two failures racing never lose an increment. Failures
racing *the read* may each still be checked against a count just below the limit, so a window can
see as many extra guesses as the function has concurrent executions (its reserved concurrency),
no more.

The "source" is the immediate caller's address together with the first ``X-Forwarded-For``
entry, when that names another address. Behind gateway_api every login comes from the gateway,
which puts its caller's address there, so its clients are counted apart instead of sharing one
counter (where 20 failures from anyone locked every login through the gateway). The header
cannot be trusted, since user_api is also reachable directly, which is why it only ever
*narrows* the immediate address: a direct caller who forges it gets counters keyed on its own
address too, so it can split its own count (one counter per value it writes) but never use up
another address's, and the per-name limit binds it whatever it writes. See docs/login-limits.md
for what that leaves open.

Names are counted case-insensitively (as they are unique) and stored only as a SHA-256 digest, as
are addresses: a password typed into the name field is a common slip, and the counters must not
keep it. The digest is not a secret-keeper (a short name can be guessed back); it keeps clear text
out of the table, its backups and any export.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from chalice import TooManyRequestsError

from svckit import config, dynamo

TABLE_SETTING = "LOGIN_ATTEMPTS_TABLE"  # wired by Ref to LoginAttemptsTable in resources.json
KEY = "counter_key"
DEFAULT_PER_NAME = 5
DEFAULT_PER_SOURCE = 20
DEFAULT_WINDOW_SECONDS = 300
MAX_WINDOW_SECONDS = 3600  # a lock-out longer than this would be a tool against the victim
_BATCH_READ_TRIES = 3

# Seconds since the epoch; replaced by tests so a window ends without sleeping.
clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Limits:
    per_name: int
    per_source: int
    window_seconds: int


def _setting(name: str, default: int, low: int, high: int) -> int:
    value = config.integer(name, default)
    if not low <= value <= high:
        raise config.ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def limits() -> Limits:
    """The stage's limits, refused when they would turn a limit off or make the lock-out long
    (a window of hours would let five wrong passwords shut a user out for hours)."""
    return Limits(
        per_name=_setting("LOGIN_FAILURES_PER_NAME", DEFAULT_PER_NAME, 1, 1000),
        per_source=_setting("LOGIN_FAILURES_PER_SOURCE", DEFAULT_PER_SOURCE, 1, 100_000),
        window_seconds=_setting(
            "LOGIN_FAILURE_WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS, 1, MAX_WINDOW_SECONDS
        ),
    )


@dataclass(frozen=True)
class Refusal:
    """Why a login is refused before its password is checked, and for how long."""

    message: str
    retry_after: int  # whole seconds until the window ends, at least 1
    scope: str  # "username" or "source": for the log line, never the name itself


@dataclass(frozen=True)
class _Window:
    """The two counters one login touches in the window that holds ``now``."""

    name_key: str
    source_key: str
    ends_at: int
    now: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.ends_at - self.now))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def forwarded_client(source: str, forwarded_for: str | None) -> str | None:
    """The address the first ``X-Forwarded-For`` entry names, normalised, when it is one and
    not ``source`` itself; else None.

    The first entry is the one the gateway wrote (proxies after it append). API Gateway adds the
    caller's own address when the caller sent no header, so an entry equal to ``source`` adds
    nothing; nor does one that is not an address (normalising also makes ``::1`` and
    ``0:0::1`` one client).
    """
    if not forwarded_for:
        return None
    first = forwarded_for.split(",", 1)[0].strip()
    try:
        client = str(ipaddress.ip_address(first))
    except ValueError:
        return None
    return None if client == source else client


def _source_identity(source: str, forwarded_for: str | None) -> str:
    """What the per-source counter counts: the address alone (its key is unchanged from before
    forwarded clients were counted), or the address and the client it forwards for."""
    client = forwarded_client(source, forwarded_for)
    return source if client is None else f"{source} for {client}"


def _window(
    username: str, source: str, forwarded_for: str | None, window_seconds: int
) -> _Window:
    now = clock()
    start = int(now // window_seconds) * window_seconds
    return _Window(
        name_key=f"name#{_digest(username.lower())}#{start}",
        source_key=f"source#{_digest(_source_identity(source, forwarded_for))}#{start}",
        ends_at=start + window_seconds,
        now=now,
    )


def _table() -> str:
    return config.require(TABLE_SETTING)


def _read_counts(keys: list[str]) -> dict[str, int]:
    """Both counters in one strongly consistent ``BatchGetItem``; a counter not there is 0.

    DynamoDB may leave keys unprocessed when it is throttling; they are asked for again a couple
    of times, then the login gets the contract's 429 rather than a check against a guess.
    """
    table = _table()
    request: dict[str, Any] = {
        table: {
            "Keys": [{KEY: {"S": key}} for key in keys],
            "ConsistentRead": True,
            "ProjectionExpression": "#k, attempts",
            "ExpressionAttributeNames": {"#k": KEY},
        }
    }
    counts = dict.fromkeys(keys, 0)
    for _ in range(_BATCH_READ_TRIES):
        try:
            response = dynamo.client().batch_get_item(RequestItems=request)
        except ClientError as exc:
            dynamo.raise_if_throttled(exc)
            raise
        for item in response.get("Responses", {}).get(table, []):
            counts[item[KEY]["S"]] = int(item.get("attempts", {}).get("N", "0"))
        request = response.get("UnprocessedKeys") or {}
        if not request:
            return counts
    raise TooManyRequestsError("the service is busy, retry after a short wait")


def check(username: str, source: str, forwarded_for: str | None = None) -> Refusal | None:
    """A refusal when the name or the source has used up its failures in this window.

    ``source`` is the immediate caller's address (API Gateway's ``identity.sourceIp``),
    ``forwarded_for`` the request's ``X-Forwarded-For`` header as received.
    """
    chosen = limits()
    window = _window(username, source, forwarded_for, chosen.window_seconds)
    counts = _read_counts([window.name_key, window.source_key])
    rule = f"in {chosen.window_seconds} seconds; retry after {window.retry_after} seconds"
    if counts[window.name_key] >= chosen.per_name:
        return Refusal(
            f"username has had too many failed logins: at most {chosen.per_name} {rule}",
            window.retry_after,
            "username",
        )
    if counts[window.source_key] >= chosen.per_source:
        return Refusal(
            f"this address has had too many failed logins: at most {chosen.per_source} {rule}",
            window.retry_after,
            "source",
        )
    return None


def record_failure(username: str, source: str, forwarded_for: str | None = None) -> None:
    """Count one failed login for the name and for the source: one atomic ``UpdateItem`` each.

    ``expires_at`` is set only by the first failure of the window (``if_not_exists``), so every
    counter's TTL is its window's end. A failed write is not swallowed: the caller answers with
    an error instead of a 401 that went uncounted.
    """
    window = _window(username, source, forwarded_for, limits().window_seconds)
    values: Mapping[str, Any] = {":one": {"N": "1"}, ":ends": {"N": str(window.ends_at)}}
    expression = "ADD attempts :one SET expires_at = if_not_exists(expires_at, :ends)"
    for key in (window.name_key, window.source_key):
        try:
            dynamo.client().update_item(
                TableName=_table(),
                Key={KEY: {"S": key}},
                UpdateExpression=expression,
                ExpressionAttributeValues=dict(values),
            )
        except ClientError as exc:
            dynamo.raise_if_throttled(exc)
            raise
