"""``make run``'s metrics: the services' EMF lines, read from their output, served to Prometheus.

Deployed, CloudWatch reads the metrics out of the functions' log lines (CloudWatch Embedded
Metric Format, written by ``svckit.metrics``). Locally the same lines arrive on the runner's
pipes, so the runner plays CloudWatch's part: :class:`Exporter` takes every child's line, keeps
the EMF ones (a JSON object with ``_aws.CloudWatchMetrics``) and turns each into
``prometheus_client`` samples, served at ``http://127.0.0.1:METRICS_PORT/metrics`` (default
5101) from a registry of its own (never the process-wide default one, which a test process or
the runner's own libraries could also write to). The services run exactly as they do deployed:
no Prometheus code in them, and what Grafana shows locally is what the dashboards show on AWS.

How an EMF metric becomes a Prometheus one:

* the name is the namespace and the metric's name in snake case: ``shop`` + ``ColdStart`` ->
  ``shop_cold_start``;
* a ``Count`` is a Counter, incremented by the line's values (``shop_requests_total``);
* any other unit is a Histogram of the values, its unit in the name
  (``shop_latency_milliseconds``), with buckets from 1 ms to a minute for milliseconds;
* every EMF dimension is a label (``service``, ``stage``, ``route``...).

EMF lines are consumed: :meth:`Exporter.sink` wraps the runner's sink so they never reach the
terminal, where one per request would drown the log lines. Every other line passes unchanged.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from tools.local.process import Sink

DEFAULT_PORT = 5101
PORT_ENV = "METRICS_PORT"
# Request latencies are milliseconds to a few seconds (the gateway gives up at 5 s); event lag
# locally a few hundred milliseconds, more while a consumer catches up.
MILLISECOND_BUCKETS = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
)  # fmt: skip
# Histogram units spelled as Prometheus's naming conventions would have them.
UNIT_SUFFIXES = {
    "Milliseconds": "milliseconds",
    "Microseconds": "microseconds",
    "Seconds": "seconds",
    "Bytes": "bytes",
    "Kilobytes": "kilobytes",
    "Megabytes": "megabytes",
    "Percent": "percent",
}
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


def snake(name: str) -> str:
    """``EventsDeadLettered`` -> ``events_dead_lettered``; anything Prometheus does not allow in
    a name becomes ``_``."""
    return _NOT_NAME.sub("_", _WORD_BOUNDARY.sub("_", name)).lower()


def is_emf(line: str) -> bool:
    """A cheap first look: only a JSON object naming ``_aws`` is parsed."""
    return line.startswith("{") and '"_aws"' in line


class Exporter:
    """EMF lines in, Prometheus samples out (see the module's docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[Counter | Histogram, tuple[str, ...]]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        # Lines that looked like EMF but could not be read, and metrics that clashed with one of
        # the same name and other labels: counted (and kept off the terminal), never raised.
        self.unreadable = 0
        self.clashes = 0

    # -- lines in --

    def take(self, line: str) -> bool:
        """Record ``line`` if it is an EMF line and say so; any other line is left alone."""
        if not is_emf(line):
            return False
        try:
            blob = json.loads(line)
        except ValueError:
            return False  # not JSON after all: a log line that happens to mention "_aws"
        if not isinstance(blob, dict):
            return False
        aws = blob.get("_aws")
        directives = aws.get("CloudWatchMetrics") if isinstance(aws, dict) else None
        if not isinstance(directives, list):
            return False
        try:
            self.record(blob, directives)
        except (TypeError, ValueError, KeyError, AttributeError):
            self.unreadable += 1
        return True

    def record(self, blob: Mapping[str, Any], directives: Iterable[Mapping[str, Any]]) -> None:
        """Every metric of every directive of one EMF object, or none of them: the whole line is
        read and checked first, so a line refused half-way leaves no half of it counted."""
        readings = list(self._readings(blob, directives))
        for _prefix, name, unit, _labels, values in readings:
            if unit == "Count" and any(v < 0 for v in values):  # a Counter refuses it
                raise ValueError(f"{name}: a count cannot go down")
        for reading in readings:
            self._observe(*reading)

    def _readings(
        self, blob: Mapping[str, Any], directives: Iterable[Mapping[str, Any]]
    ) -> Iterator[tuple[str, str, str, dict[str, str], list[float]]]:
        for directive in directives:
            prefix = snake(str(directive.get("Namespace", "")))
            dimension_sets: Sequence[Sequence[str]] = directive.get("Dimensions") or [[]]
            # Several dimension sets aggregate the same values differently in CloudWatch;
            # Prometheus aggregates at query time, so the most detailed labels are kept.
            names: list[str] = []
            for dimension_set in dimension_sets:
                names += [str(n) for n in dimension_set if str(n) not in names]
            labels = {snake(name): str(blob[name]) for name in names}
            for definition in directive.get("Metrics", []):
                name = str(definition["Name"])
                unit = str(definition.get("Unit", "None"))
                raw = blob[name]
                values = [float(v) for v in (raw if isinstance(raw, list) else [raw])]
                yield prefix, name, unit, labels, values

    def _observe(
        self, prefix: str, name: str, unit: str, labels: Mapping[str, str], values: list[float]
    ) -> None:
        metric = self._metric(prefix, name, unit, tuple(labels))
        if metric is None:
            return
        child = metric.labels(**labels) if labels else metric
        if isinstance(child, Counter):
            child.inc(sum(values))
        else:
            for value in values:
                child.observe(value)

    def _metric(
        self, prefix: str, name: str, unit: str, label_names: tuple[str, ...]
    ) -> Counter | Histogram | None:
        base = "_".join(part for part in (prefix, snake(name)) if part)
        with self._lock:
            known = self._metrics.get(base)
            if known is not None:
                metric, known_labels = known
                if known_labels != label_names:
                    self.clashes += 1
                    return None
                return metric
            documentation = f"{name} ({unit}) from the services' EMF lines"
            if unit == "Count":
                metric = Counter(base, documentation, label_names, registry=self.registry)
            else:
                suffix = UNIT_SUFFIXES.get(unit)
                full = f"{base}_{suffix}" if suffix and not base.endswith(suffix) else base
                buckets = (
                    MILLISECOND_BUCKETS if unit == "Milliseconds" else Histogram.DEFAULT_BUCKETS
                )
                metric = Histogram(
                    full, documentation, label_names, registry=self.registry, buckets=buckets
                )
            self._metrics[base] = (metric, label_names)
            return metric

    def sink(self, inner: Sink | None) -> FilteringSink:
        """The runner's sink with EMF lines taken out (and recorded here)."""
        return FilteringSink(self, inner)

    # -- samples out --

    def serve(self, host: str, port: int) -> str:
        """Serve ``/metrics`` on ``host:port`` from a thread of its own; return the URL."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.url = f"http://{host}:{port}/metrics"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class FilteringSink:
    """A sink that hands EMF lines to the exporter and every other line to ``inner``."""

    def __init__(self, exporter: Exporter, inner: Sink | None) -> None:
        self.exporter = exporter
        self.inner = inner

    def __call__(self, name: str, line: str) -> None:
        if self.exporter.take(line) or self.inner is None:
            return
        self.inner(name, line)

    def say(self, text: str) -> None:
        """The runner's own messages: straight to ``inner``, as without the exporter."""
        say = getattr(self.inner, "say", None)
        if say is not None:
            say(text)
            return
        for line in text.splitlines() or [""]:
            self("localrun", line)
