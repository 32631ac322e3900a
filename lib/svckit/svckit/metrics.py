"""Metrics: CloudWatch Embedded Metric Format (EMF) lines, written once per invocation.

Every metric the services emit is declared here (:data:`CATALOGUE`), with its unit and its
dimensions. The names and dimension sets are a contract: the CDK stack's dashboards and
alarms, and ``make run``'s Prometheus exporter (``tools/local/metrics.py``), are written against
them. Every metric carries the dimensions ``service`` (the app's name) and ``stage``; some add
their own (``route``, ``status_class``, ``target``, ``status``, ``type``) and are emitted with
exactly those, never a subset, so that a query on the declared set finds every value.

How a value gets out:

* Code anywhere calls :func:`add` (``metrics.add(PRODUCTS_ADDED, 1)``). The value joins the
  current invocation's :class:`Invocation`, found through a context variable: the local server
  answers requests on threads, and one request's values must not join another's. Outside an
  invocation (a unit test calling a function directly) :func:`add` keeps nothing.
* :meth:`Metrics.middleware`, a Chalice middleware for every event type, opens the invocation
  and flushes it when the handler returns or raises: one EMF line per dimension set, or nothing
  when nothing was added. Chalice has no Lambda handler to decorate (it owns the entry point), so
  Powertools' ``log_metrics`` decorator has no place to go; the middleware is where Chalice runs
  code around every invocation, HTTP and events alike.
* Powertools' CloudWatch EMF provider (``EphemeralMetrics``, one per service, made at cold start)
  serialises each line. Its ``Metrics`` class keeps its metric set at class level, which the
  three apps loaded into one pytest process would share; and even one provider's set is one per
  process, not one per request. So values are buffered here per invocation and the provider is
  used only to serialise, with the metrics and dimensions passed in: that call changes nothing
  on the provider, so the threads of the local server can share it.
* The line is written where the service's log lines go (``svckit.logs.write_lines``): locally
  through the same writer thread, so it is never cut by a log line, and in Lambda on stdout,
  where CloudWatch Logs reads it into metrics.

Powertools' switches still apply, read at cold start: ``POWERTOOLS_METRICS_DISABLED`` (or
``POWERTOOLS_DEV``) turns the lines off, which is why no stage may set them
(``tests/svckit/test_metrics.py``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from svckit import config, logs, tokens

NAMESPACE = config.PROJECT
DEFAULT_DIMENSIONS = ("service", "stage")
# EMF takes at most 100 values of one metric in one line.
MAX_VALUES_PER_LINE = 100
# One encoder for every line: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class Metric:
    """One metric of the contract: its name, its unit and the dimensions it adds to the
    defaults (``service``, ``stage``)."""

    name: str
    unit: MetricUnit
    dimensions: tuple[str, ...] = ()

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return DEFAULT_DIMENSIONS + self.dimensions


COUNT = MetricUnit.Count
MILLISECONDS = MetricUnit.Milliseconds

# Every HTTP request a service's app sees (Service's middleware). ``route`` is Chalice's resource
# path with the method (``GET /users/{username}``), never the raw path, so the number of series
# is bounded by the routes; ``status_class`` is 2xx, 3xx, 4xx or 5xx.
REQUESTS = Metric("Requests", COUNT, ("route", "status_class"))
LATENCY = Metric("Latency", MILLISECONDS, ("route", "status_class"))
# Once per process, on its first invocation of any kind.
COLD_START = Metric("ColdStart", COUNT)
# What the services did, by the service that did it.
USERS_REGISTERED = Metric("UsersRegistered", COUNT)
USERS_DELETED = Metric("UsersDeleted", COUNT)
LOGINS_FAILED = Metric("LoginsFailed", COUNT)
LOGINS_THROTTLED = Metric("LoginsThrottled", COUNT)
PRODUCTS_ADDED = Metric("ProductsAdded", COUNT)
PRODUCTS_DELETED = Metric("ProductsDeleted", COUNT)
POINTS_GRANTED = Metric("PointsGranted", COUNT)  # the points, not the grants
# The gateway's calls to the services: ``target`` is user_api or product_api; ``status`` is the
# gateway's own replacement answer (502 failed, 503 unavailable, 504 timed out).
UPSTREAM_LATENCY = Metric("UpstreamLatency", MILLISECONDS, ("target",))
UPSTREAM_FAILURES = Metric("UpstreamFailures", COUNT, ("target", "status"))
# A store or other AWS service slow, unreachable or throttling (svckit.overload): ``dependency``
# and ``operation`` are botocore's names (dynamodb, PutItem); ``kind`` throttled, timeout,
# unreachable or failing.
DEPENDENCY_FAILURES = Metric("DependencyFailures", COUNT, ("dependency", "operation", "kind"))
# Events (svckit.events), by event ``type``.
EVENTS_RELAYED = Metric("EventsRelayed", COUNT, ("type",))
EVENTS_APPLIED = Metric("EventsApplied", COUNT, ("type",))
EVENTS_SKIPPED = Metric("EventsSkipped", COUNT, ("type",))
EVENTS_FAILED = Metric("EventsFailed", COUNT, ("type",))
EVENTS_DEAD_LETTERED = Metric("EventsDeadLettered", COUNT, ("type",))
EVENT_LAG = Metric("EventLag", MILLISECONDS, ("type",))

CATALOGUE: tuple[Metric, ...] = (
    REQUESTS,
    LATENCY,
    COLD_START,
    USERS_REGISTERED,
    USERS_DELETED,
    LOGINS_FAILED,
    LOGINS_THROTTLED,
    PRODUCTS_ADDED,
    PRODUCTS_DELETED,
    POINTS_GRANTED,
    UPSTREAM_LATENCY,
    UPSTREAM_FAILURES,
    DEPENDENCY_FAILURES,
    EVENTS_RELAYED,
    EVENTS_APPLIED,
    EVENTS_SKIPPED,
    EVENTS_FAILED,
    EVENTS_DEAD_LETTERED,
    EVENT_LAG,
)


def status_class(status: int) -> str:
    """``404`` -> ``"4xx"``: the bounded form of a status for a dimension."""
    return f"{status // 100}xx"


# A group of values that go out in one line: the added dimensions' names and values.
_GroupKey = tuple[tuple[str, ...], tuple[str, ...]]


class Invocation:
    """The values one invocation added, grouped by dimension set; safe to add to from the
    threads an invocation starts (gateway_api's ``/health`` probes carry its context)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[_GroupKey, dict[str, tuple[str, list[float]]]] = {}
        self._closed = False

    def add(self, metric: Metric, value: float, dimensions: Mapping[str, str]) -> None:
        if len(dimensions) != len(metric.dimensions):
            raise ValueError(
                f"{metric.name} takes the dimensions {metric.dimensions}, got {tuple(dimensions)}"
            )
        try:
            values = tuple([str(dimensions[name]) for name in metric.dimensions])
        except KeyError as exc:
            raise ValueError(
                f"{metric.name} takes the dimensions {metric.dimensions}, got {tuple(dimensions)}"
            ) from exc
        key = (metric.dimensions, values)
        with self._lock:
            if self._closed:
                return  # a straggling thread after the flush: the line is already written
            group = self._groups.setdefault(key, {})
            entry = group.get(metric.name)
            if entry is None:
                group[metric.name] = (metric.unit.value, [float(value)])
            elif metric.unit is COUNT:
                entry[1][0] += float(value)  # a count is a sum: one value, however many adds
            else:
                entry[1].append(float(value))

    def close(self) -> dict[_GroupKey, dict[str, tuple[str, list[float]]]]:
        """Take the values; later adds are dropped."""
        with self._lock:
            self._closed = True
            groups, self._groups = self._groups, {}
        return groups


_current: ContextVar[Invocation | None] = ContextVar("svckit_metrics_invocation", default=None)


def add(metric: Metric, value: float = 1, **dimensions: str) -> None:
    """Add ``value`` to ``metric`` in the current invocation, with ``metric``'s own dimensions
    (exactly those; a missing or extra one is a ValueError, so a call site cannot drift from the
    contract). Nothing is kept outside an invocation."""
    invocation = _current.get()
    if invocation is not None:
        invocation.add(metric, value, dimensions)


class Metrics:
    """One service's metrics: the cold start, the invocation around each handler, the flush."""

    def __init__(self, service: str, logger: Logger) -> None:
        self.service = service
        self.log = logger
        # Made once, at cold start: only its serialiser is used (see the module's docstring).
        self._emf = EphemeralMetrics(
            namespace=NAMESPACE, service=service, dimension_set={"service": service}
        )
        # True until the first invocation, which adds ColdStart; one Metrics per app module, so
        # one per Lambda process (and one per app in a pytest process).
        self.cold = True
        self._cold_lock = threading.Lock()
        # Powertools' switches, read once: a function's environment does not change.
        self.enabled = not is_metrics_disabled()
        self.write: Callable[[list[str]], None] = lambda lines: logs.write_lines(logger, lines)

    def _first_invocation(self) -> bool:
        if not self.cold:
            return False
        with self._cold_lock:
            first, self.cold = self.cold, False
        return first

    def _open(self) -> tuple[Invocation, Token[Invocation | None]]:
        invocation = Invocation()
        token = _current.set(invocation)
        if self.cold and self._first_invocation():
            invocation.add(COLD_START, 1, {})
        return invocation, token

    def _close(self, invocation: Invocation, token: Token[Invocation | None]) -> None:
        _current.reset(token)
        self.flush(invocation)

    @contextlib.contextmanager
    def invocation(self) -> Iterator[Invocation]:
        """Collect what the code inside adds, and write it when the code is done (whether it
        returned or raised)."""
        invocation, token = self._open()
        try:
            yield invocation
        finally:
            self._close(invocation, token)

    def middleware(self, event: Any, get_response: Callable[[Any], Any]) -> Any:
        """Chalice middleware (``app.register_middleware(..., "all")``): one invocation, as
        :meth:`invocation` but without a generator's cost on every request."""
        invocation, token = self._open()
        try:
            return get_response(event)
        finally:
            self._close(invocation, token)

    def lines(self, invocation: Invocation) -> list[str]:
        """The EMF lines of ``invocation``'s values, one per dimension set (a line holds one
        value per metric name, so two routes, or two event types, are two lines)."""
        groups = invocation.close()
        if not groups:
            return []
        base = {"service": self.service, "stage": tokens.current_stage()}
        lines = []
        for (names, values), metrics in groups.items():
            dimensions = {**base, **dict(zip(names, values, strict=True))}
            for chunk in _chunks(metrics):
                blob = self._emf.serialize_metric_set(
                    metrics=chunk, dimensions=dimensions, metadata={}
                )
                lines.append(_ENCODER.encode(blob))
        return lines

    def flush(self, invocation: Invocation) -> None:
        """Write ``invocation``'s lines; never fails the invocation it measured."""
        if not self.enabled:
            invocation.close()
            return
        try:
            lines = self.lines(invocation)
            if lines:
                self.write(lines)
        except Exception as exc:  # a metric must never turn an answer into a 500
            self.log.warning("metrics not written", error=type(exc).__name__, reason=str(exc))


def _chunks(
    metrics: Mapping[str, tuple[str, list[float]]],
) -> Iterator[dict[str, dict[str, Any]]]:
    """Powertools' metric-set shape, split so no line holds more than EMF's 100 values of one
    metric (a relay batch of 100 records is one value per count, but lags are one per event)."""
    longest = max(len(values) for _, values in metrics.values())
    for start in range(0, longest, MAX_VALUES_PER_LINE):
        end = start + MAX_VALUES_PER_LINE
        yield {
            name: {"Unit": unit, "StorageResolution": 60, "Value": values[start:end]}
            for name, (unit, values) in metrics.items()
            if values[start:end]
        }
