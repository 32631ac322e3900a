"""Calling the services behind the gateway: one pooled client, short timeouts, honest failures.

One ``urllib3.PoolManager`` lives at module scope, so a warm Lambda (or the local server's
threads) reuses keep-alive connections instead of paying a TCP (and TLS) handshake per call.
urllib3's retries are off: a retried POST could register a user or add a product twice, and a
caller waiting on retries is exactly the "hang" the contract forbids. Timeouts are read from the
stage's environment at each call (never at import), so ``chalice.test.Client`` and Lambda both
apply their own values.

A GET (or HEAD) is sent once more, on a new connection, when its try failed before reaching
the service's code: refused, or a reused keep-alive connection closed or reset before any byte
of an answer (the service's idle timeout firing just as the request went out, which otherwise
gives a spurious 502). Nothing else is retried, and a write never is: it may have been stored
even when no answer came back.

Every call has one total deadline, ``UPSTREAM_READ_TIMEOUT`` (5 s) from its start to the last
byte of the body, whatever the service does in between (``connections`` enforces it even on a
read that is already waiting), and a body limit, :data:`MAX_BODY_BYTES`. Past the deadline the
caller gets 504 "timed out", past the limit 502 "failed": a service can no longer hold the
gateway, or its memory, for as long as it likes by answering slowly or at length.

A failing service is reported in the contract's shape and in the caller's terms, never with the
service's internals: down (refused, unresolvable, connect timeout) is 503, slow is 504, broken
(a protocol error or its own 500) is 502. Everything else, including its 4xx answers, passes
through byte for byte with ``Content-Type``, ``Link``, ``X-Next-Cursor`` and ``Retry-After``.

Which answers are replaced is decided by where they come from, never by their shape: every 5xx
from upstream. The deploy rewrites a service's API Gateway errors into the contract's
``{"Code", "Message"}`` shape too (``infra/gateway_responses.py``), so a shape test would pass
on API Gateway's ``502 Internal server error`` or ``504 Endpoint request timed out``, which tell the
caller nothing about which service failed. The one 5xx passed through is a service's own 503
with ``Retry-After`` (its store is busy, svckit.overload): the caller can act on that.

Every call is timed (``UpstreamLatency`` by target) and every answer the gateway makes up in a
service's place is counted (``UpstreamFailures`` by target and status, ``svckit.metrics``). In
Lambda every call carries the invocation's X-Ray trace header, so the trace goes on through API
Gateway into the service.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from chalice import ChaliceViewError, Response
from chalice.app import Request
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from chalicelib import connections
from svckit import aws, config, metrics
from svckit.errors import BadGatewayError, GatewayTimeoutError, ServiceUnavailableError
from svckit.web import REQUEST_ID_HEADER, Service

DEFAULT_CONNECT_TIMEOUT = 2.0
# The largest answer body taken from a service, counted as it is read (a declared length over it
# is refused before reading). Lambda refuses a response payload over 6 MB (6,291,456 bytes), a
# service's own function included, and the gateway's answer carries the body as a JSON string,
# where escaping can make it longer: a larger body could never reach the caller, only cost the
# gateway memory and time. 5 MiB leaves that room; it bites only a broken or local service.
MAX_BODY_BYTES = 5 * 1024 * 1024
# Request headers a service needs from the caller; nothing else (cookies, hop-by-hop headers,
# API Gateway's own, the caller's X-Forwarded-For) is forwarded.
# Idempotency-Key: the services keep the records (the gateway owns no table), so a retry through
# the gateway is recognised by the service that did the work.
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Authorization", "Idempotency-Key")
FORWARDED_FOR_HEADER = "X-Forwarded-For"
# X-Ray: Lambda puts the invocation's trace header in this variable (per invocation, so it is
# read per call); sent on, API Gateway continues the same trace into the service it calls.
# Absent (locally, in tests) nothing is sent.
TRACE_ENV = "_X_AMZN_TRACE_ID"
TRACE_HEADER = "X-Amzn-Trace-Id"
# Methods that may be sent twice: a second GET changes nothing a first one did not.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})
# Response headers the contract says pass through unchanged, and a 429's Retry-After (user_api's
# failed-login limit says when to try again; without it a client can only guess).
PASSED_RESPONSE_HEADERS = (
    "Content-Type", "Link", "X-Next-Cursor", "Retry-After", "Location", "Idempotent-Replayed",
)  # fmt: skip

# maxsize covers the local server's concurrent threads and /health's parallel probes per host;
# block=False opens an extra connection rather than queueing a request behind a busy one.
_pool = connections.pool_manager(num_pools=8, maxsize=16, block=False, retries=False)


@dataclass(frozen=True)
class Upstream:
    """A service the gateway calls: its name, how callers hear of it, where its URL is set."""

    name: str
    label: str
    url_setting: str

    def base_url(self) -> str:
        """The service's base URL from the stage's environment; it may carry a path (``/api``)."""
        value = config.require(self.url_setting)
        if not value.startswith(("http://", "https://")):
            raise config.ConfigError(f"{self.url_setting} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    def unavailable(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(f"{self.label} is unavailable")

    def timed_out(self) -> GatewayTimeoutError:
        return GatewayTimeoutError(f"{self.label} timed out")

    def failed(self) -> BadGatewayError:
        return BadGatewayError(f"{self.label} failed")

    def counted(self, error: ChaliceViewError) -> ChaliceViewError:
        """``error``, the gateway's own answer for this service, counted by its status."""
        metrics.add(metrics.UPSTREAM_FAILURES, 1, target=self.name, status=str(error.STATUS_CODE))
        return error


USER = Upstream("user_api", "user service", "USER_API_URL")
PRODUCT = Upstream("product_api", "product service", "PRODUCT_API_URL")
UPSTREAMS = (USER, PRODUCT)


@dataclass(frozen=True)
class Answer:
    """A service's whole answer, read within the call's deadline and the body limit."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class BodyTooLargeError(Exception):
    """The answer's body is over :data:`MAX_BODY_BYTES`: a broken service, answered as one."""


def segment(value: str) -> str:
    """One path parameter as a URL path segment.

    Everything outside the unreserved set is percent-encoded, ``/`` included, so a parameter can
    never add a segment; ``.`` and ``..`` are encoded too, because urllib3 removes dot segments and
    ``/users/..`` would otherwise reach the service's root.
    """
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def query_string(request: Request) -> str:
    """The caller's query parameters, every value of a repeated one kept, in order."""
    params = request.query_params
    if not params:
        return ""
    pairs = [(key, value) for key in params for value in params.getlist(key)]
    return urlencode(pairs)


def _never_reached(exc: Exception, deadline: connections.Deadline) -> bool:
    """Whether a failed try is the connection's failure, not the service's: no connection was
    made, or one that had already served an answer was closed or reset before any byte of this
    one (http.client's ``RemoteDisconnected`` is exactly "closed without a status line"), which
    is what a service closing an idle keep-alive connection looks like. Only GETs are sent
    again, so even a request the service did read changes nothing the second time. A new
    connection closed that way is not counted: the service may have taken the request and
    crashed on it, and would crash again.
    """
    if deadline.expired or deadline.answered:
        return False
    if isinstance(exc, NewConnectionError):
        return True
    cause = exc.args[1] if isinstance(exc, ProtocolError) and len(exc.args) > 1 else None
    return deadline.reused and isinstance(cause, ConnectionError)


def _failure(target: Upstream, exc: Exception, expired: bool = False) -> ChaliceViewError:
    """The contract's error for a call that got no usable answer.

    A call whose deadline expired timed out, whatever error the interrupted read then raised
    (an end of stream, an incomplete body).
    """
    if expired:
        return target.timed_out()
    if isinstance(exc, ConnectTimeoutError):  # refused, unresolvable and connect timeouts alike
        return target.unavailable()
    if isinstance(exc, ReadTimeoutError):
        return target.timed_out()
    return target.failed()


def _replacement(target: Upstream, status: int) -> ChaliceViewError:
    """Our own error for any 5xx from upstream (API Gateway's 504 for a slow Lambda, its 502 for
    a crashed one, a view's 500, the service's own 503): what happened, in the caller's terms."""
    if status == 503:
        return target.unavailable()
    if status == 504:
        return target.timed_out()
    return target.failed()


def _own_overload(service: Service, response: Any) -> bool:
    """A 503 the service made itself (it echoes our request id; API Gateway's own answers carry
    API Gateway's id) and that says when to retry."""
    headers = response.headers
    return bool(headers.get("Retry-After")) and headers.get(REQUEST_ID_HEADER) == (
        service.request_id
    )


def call(
    service: Service,
    target: Upstream,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    budget: float | None = None,
) -> Answer:
    """One HTTP call to ``target``; a call that gets no answer raises the contract's 502/503/504.

    ``budget`` is the whole call's time in seconds, from connecting to the body's last byte
    (``UPSTREAM_READ_TIMEOUT``, by default the stage's ``svckit.aws`` upstream deadline: above
    the services' own worst case, so a service answers, if only with its 503, before the gateway
    gives up on it); ``UPSTREAM_CONNECT_TIMEOUT`` still caps connecting.
    The answer itself is returned whatever its status: deciding what a status means is the
    caller's business (``forward`` passes most through, ``/health`` only wants 200).
    """
    try:
        url = target.base_url() + path + (f"?{query}" if query else "")
    except config.ConfigError as exc:
        # A deployment mistake, not the caller's: logged loudly, answered as the service being
        # unreachable, which from the caller's side is exactly what it is.
        service.log.error("upstream not configured", upstream=target.name, error=str(exc))
        raise target.counted(target.unavailable()) from exc
    if budget is None:
        budget = config.number("UPSTREAM_READ_TIMEOUT", aws.budget().upstream_deadline)
    connect = config.number("UPSTREAM_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
    # Named, so a service's logs tell the gateway's calls from anyone else's.
    sent = {"User-Agent": "gateway_api", **(headers or {})}
    if trace := os.environ.get(TRACE_ENV):
        sent[TRACE_HEADER] = trace
    started = time.perf_counter()
    deadline = connections.Deadline(budget)
    tries = 0
    with connections.watchdog.watching(deadline), _timed(target):
        while True:
            tries += 1
            try:
                answer = _exchange(method, url, body, sent, deadline, connect)
                break
            except (HTTPError, OSError, BodyTooLargeError) as exc:
                fields = {
                    "upstream": target.name,
                    "method": method,
                    "path": path,
                    "error": type(exc).__name__,
                }
                if tries == 1 and method in IDEMPOTENT_METHODS and _never_reached(exc, deadline):
                    service.log.info("upstream call retried", **fields)
                    continue
                failure = _failure(target, exc, deadline.expired)
                service.log.warning(
                    "upstream call failed",
                    **fields,
                    deadline_expired=deadline.expired,
                    tries=tries,
                    answered=failure.STATUS_CODE,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
                raise target.counted(failure) from exc
    service.log.info(
        "upstream call",
        upstream=target.name,
        method=method,
        path=path,
        status=answer.status,
        tries=tries,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return answer


@contextlib.contextmanager
def _timed(target: Upstream) -> Iterator[None]:
    """``UpstreamLatency``: the whole call, its retry included, answered or failed (a timeout
    is time the caller waited too)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        metrics.add(metrics.UPSTREAM_LATENCY, elapsed_ms, target=target.name)


def _exchange(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    deadline: connections.Deadline,
    connect: float,
) -> Answer:
    """One request and its whole answer, on a pooled connection, within ``deadline``.

    The body is read here rather than by urllib3 (``preload_content=False``) so that its size
    is checked as it arrives. A connection is handed back to the pool only after a complete
    answer; one left mid-answer is closed.
    """
    remaining = deadline.remaining()
    if remaining <= 0:
        raise ReadTimeoutError(None, url, "no time left for this call")  # type: ignore[arg-type]
    response = _pool.request(
        method,
        url,
        body=body,
        headers=headers,
        # Bounds each socket wait by what is left; the watchdog bounds the sum of them.
        timeout=urllib3.Timeout(connect=connect, read=remaining, total=remaining),
        redirect=False,
        preload_content=False,
    )
    try:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise BodyTooLargeError(f"declared {declared} bytes")
        data = response.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise BodyTooLargeError(f"more than {MAX_BODY_BYTES} bytes")
        if deadline.expired:
            # The watchdog ended the stream: a body that ends with the connection would look
            # complete, and may not be.
            raise ReadTimeoutError(None, url, "deadline expired")  # type: ignore[arg-type]
    except BaseException:
        response.close()
        raise
    finally:
        response.release_conn()
    return Answer(status=response.status, headers=response.headers, body=data)


def caller_address(request: Request) -> str | None:
    """The caller's address as API Gateway saw it (``identity.sourceIp``), when it is one.

    Never the caller's own ``X-Forwarded-For``: anyone can write that, and user_api counts
    failed logins per address (``user_api/chalicelib/login_limits.py``).
    """
    identity = request.context.get("identity") or {}
    try:
        return str(ipaddress.ip_address(str(identity.get("sourceIp") or "")))
    except ValueError:
        return None


def forward(service: Service, target: Upstream, path: str) -> Response:
    """Send the current request to ``target`` at ``path`` and answer with what it answered.

    ``path`` is the service's route with parameters already encoded by :func:`segment`. The
    method, raw body and query string are the caller's; the request id is the gateway's own, so
    one id follows the request through every service's logs. ``X-Forwarded-For`` is the
    caller's address alone, so a service behind the gateway can tell its clients apart (every
    call it gets comes from the gateway's address).
    """
    request = service.request
    # Sent on as sent, an empty value too: an empty Idempotency-Key is the service's 400 to
    # give, and dropping it made the write run unkeyed (found by schemathesis).
    headers = {
        name: value
        for name in FORWARDED_REQUEST_HEADERS
        if (value := request.headers.get(name)) is not None
    }
    headers[REQUEST_ID_HEADER] = service.request_id
    if client := caller_address(request):
        headers[FORWARDED_FOR_HEADER] = client
    response = call(
        service,
        target,
        request.method,
        path,
        query=query_string(request),
        body=request.raw_body or None,
        headers=headers,
    )
    status = response.status
    data = response.body
    if status == 503 and _own_overload(service, response):
        # The service's own "my store is busy, retry after": passed through unchanged, with its
        # Retry-After, so the caller learns when to come back (and retries with its key).
        return Response(body=data.decode("utf-8", "replace"), status_code=503, headers={
            name: value for name in PASSED_RESPONSE_HEADERS if (value := response.headers.get(name))
        })  # fmt: skip
    if status >= 500:
        # The body is not read into the answer or the log: it may hold the service's internals.
        # The answer's own request id is logged: when API Gateway made the answer it is API
        # Gateway's id (not ours), the one to look up in that stage's execution logs.
        service.log.warning(
            "upstream answered an error",
            upstream=target.name,
            status=status,
            upstream_request_id=response.headers.get(REQUEST_ID_HEADER, ""),
        )
        raise target.counted(_replacement(target, status))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Every service answers JSON; anything else is a broken service, not a caller's problem.
        raise target.counted(target.failed()) from exc
    passed = {
        name: value for name in PASSED_RESPONSE_HEADERS if (value := response.headers.get(name))
    }
    return Response(body=text, status_code=status, headers=passed)


# Where /health asks each service whether it can serve: its readiness check, which also touches
# its table and key (``/health`` alone is liveness and costs the service nothing). A service that
# does not know ``ready`` answers its liveness, so the gateway works before and after it learns.
DEFAULT_HEALTH_PATH = "/health?ready=1"


def _health_path() -> tuple[str, str]:
    """``UPSTREAM_HEALTH_PATH`` as (path, query); a value that is not a path is a deploy error."""
    value = config.optional("UPSTREAM_HEALTH_PATH", DEFAULT_HEALTH_PATH)
    if not value.startswith("/"):
        raise config.ConfigError(f"UPSTREAM_HEALTH_PATH must start with '/', got {value!r}")
    path, _, query = value.partition("?")
    return path, query


def probe(
    service: Service, target: Upstream, request_id: str, budget: float
) -> dict[str, Any]:
    """``target``'s readiness as a dependency entry; never raises, answers within ``budget``.

    ``status`` is ``ok`` or ``failing``; a failing one says why (``unavailable``, ``timeout``,
    ``failed``, or ``not ready`` with the service's ``http_status``), so whoever reads the
    gateway's ``/health`` knows where to look. Runs on a thread of its own, so the request id is
    passed in rather than read from the app's current request.
    """
    started = time.perf_counter()

    def failing(reason: str, **more: Any) -> dict[str, Any]:
        return {"status": "failing", "reason": reason, "latency_ms": elapsed(), **more}

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    try:
        path, query = _health_path()
        response = call(
            service,
            target,
            "GET",
            path,
            query=query,
            headers={REQUEST_ID_HEADER: request_id},
            budget=budget,
        )
    except config.ConfigError as exc:
        service.log.error("health path not configured", error=str(exc))
        return failing("unavailable")
    except ChaliceViewError as exc:
        return failing({503: "unavailable", 504: "timeout"}.get(exc.STATUS_CODE, "failed"))
    healthy = False
    if response.status == 200:
        try:
            healthy = json.loads(response.body).get("status") == "ok"
        except (ValueError, UnicodeDecodeError, AttributeError):
            healthy = False
    if healthy:
        return {"status": "ok", "latency_ms": elapsed()}
    return failing("not ready", http_status=response.status)
