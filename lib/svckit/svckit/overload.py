"""A store that is slow, unreachable or throttling is the service's overload, not its bug: the
caller gets ``503 ServiceUnavailableError`` (or ``429 TooManyRequestsError`` when throttled) with
``Retry-After``, never a 500, plus a log line and a ``DependencyFailures`` metric.

Whether such a write happened is unknown to the service too (a read timeout may follow a stored
write), so the answer says to retry, and a retry with the same ``Idempotency-Key`` (API.md,
"Retries and overload") finds out without doing it twice.

Every route of every service is wrapped (:func:`guard`, applied by ``svckit.web.Service``), so no
view has to remember it; the operation that failed is known from a botocore hook that every
client made by :func:`svckit.aws.make_client` carries. botocore is imported only when an error
is being classified: gateway_api, which makes no AWS call, never pays for it at cold start.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

from chalice import Response, TooManyRequestsError

from svckit import metrics
from svckit.errors import ServiceUnavailableError, error_response

RETRY_AFTER_HEADER = "Retry-After"
RETRY_AFTER_SECONDS = 1  # a burst on one machine drains in about a second; AWS's throttling too
THROTTLED, TIMEOUT, UNREACHABLE, FAILING = "throttled", "timeout", "unreachable", "failing"
# Answers that mean "busy, try again shortly". TransactionConflict is a plain write meeting an
# item that a transaction (a consumer applying an event) holds at that moment;
# TransactionInProgress, a keyed retry whose ClientRequestToken's first use is still running.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "TransactionInProgressException",
        "TooManyRequestsException",
    }
)
# Reasons a transaction is cancelled for that mean the same (``CancellationReasons``' codes).
BUSY_CANCELLATIONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
# The AWS service's own failures (its 5xx), once botocore's retries are spent.
FAILING_CODES = frozenset({"InternalServerError", "ServiceUnavailable", "InternalFailure"})

_last_call: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "svckit_last_aws_call", default=("aws", "unknown")
)


class OutOfTime(Exception):
    """The request's time for AWS calls is spent (svckit.aws.start_request)."""

    operation_name = ""


def remember_call(model: Any, **_: Any) -> None:
    """botocore ``before-call`` hook: which operation this thread is calling, for the metric of
    a timeout (whose exception names no operation)."""
    _last_call.set((model.service_model.service_name, model.name))


def refuse_late_call(model: Any, **_: Any) -> None:
    """botocore ``before-call`` hook: no call once the request's time is spent
    (svckit.aws.out_of_time)."""
    from svckit import aws

    if aws.out_of_time():
        late = OutOfTime(f"no time left for {model.name}")
        late.operation_name = model.name  # as a ClientError names it, for the metric
        raise late


def classify(exc: BaseException) -> str | None:
    """The kind of dependency failure ``exc`` is, or None when it is something else (a bug,
    a refused permission, a malformed call: those stay the 500 they are). A library's wrapper
    (Powertools' idempotency store error) is judged by the botocore error it wraps."""
    while not type(exc).__module__.startswith("botocore"):
        if isinstance(exc, OutOfTime):
            return TIMEOUT
        if exc.__cause__ is None or not type(exc).__module__.startswith("aws_lambda_powertools"):
            return None
        exc = exc.__cause__
    from botocore import exceptions

    if isinstance(exc, exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in THROTTLING_CODES:
            return THROTTLED
        return FAILING if code in FAILING_CODES else None
    if isinstance(exc, exceptions.ReadTimeoutError | exceptions.ConnectTimeoutError):
        return TIMEOUT
    if isinstance(exc, exceptions.HTTPClientError | exceptions.ConnectionError):
        return UNREACHABLE
    return None


def count(exc: BaseException, kind: str) -> None:
    """The metric and the log line's fields of one dependency failure."""
    dependency, operation = _last_call.get()
    operation = str(getattr(exc, "operation_name", "") or operation)
    metrics.add(
        metrics.DEPENDENCY_FAILURES, 1, dependency=dependency, operation=operation, kind=kind
    )


def answer(kind: str) -> Response:
    error = (
        TooManyRequestsError("the service is busy, retry after a short wait")
        if kind == THROTTLED
        else ServiceUnavailableError("the service's store is not answering, retry shortly")
    )
    return error_response(error, headers={RETRY_AFTER_HEADER: str(RETRY_AFTER_SECONDS)})


def guard(view: Callable[..., Any], log: Callable[[], Any]) -> Callable[..., Any]:
    """``view`` answering 503/429 with ``Retry-After`` for a dependency failure it let escape;
    ``log`` gives the service's logger (made after its routes' registration may start)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            count(exc, kind)
            dependency, operation = _last_call.get()
            log().warning(
                "dependency failed",
                dependency=dependency,
                operation=str(getattr(exc, "operation_name", "") or operation),
                kind=kind,
                error=type(exc).__name__,
            )
            return answer(kind)

    return guarded
