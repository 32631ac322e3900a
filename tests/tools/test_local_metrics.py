"""tools.local.metrics: EMF lines (as svckit.metrics writes them) become Prometheus series with
the right names, types, labels and values; every other line reaches the terminal unchanged."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path

import pytest

from svckit import metrics
from svckit.web import Service
from tools.local.metrics import MILLISECOND_BUCKETS, Exporter, snake
from tools.local.process import free_port

# A service of the test's own: a second Service under a real app's name would configure that
# app's logger again (Powertools keeps one configuration per name) and disturb other tests.
SERVICE = Service(f"exporter_test_{uuid.uuid4().hex[:6]}", Path("."))
BASE = {"service": SERVICE.name, "stage": "local"}
REQUEST = {**BASE, "route": "GET /users/{username}"}


def emf_lines(*adds: tuple) -> list[str]:
    """The lines the service writes for one invocation that added ``adds``."""
    SERVICE.metrics.cold = False
    with SERVICE.metrics.invocation() as invocation:
        for metric, value, dimensions in adds:
            metrics.add(metric, value, **dimensions)
        return SERVICE.metrics.lines(invocation)


@pytest.fixture
def exporter() -> Exporter:
    return Exporter()


def sample(exporter: Exporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("emf", "prometheus"),
    [
        ("Requests", "requests"),
        ("ColdStart", "cold_start"),
        ("EventsDeadLettered", "events_dead_lettered"),
        ("UpstreamLatency", "upstream_latency"),
        ("EventLag", "event_lag"),
        ("shop", "shop"),
    ],
)
def test_names_are_snake_cased(emf, prometheus):
    assert snake(emf) == prometheus


def test_a_request_line_is_a_counter_and_a_histogram_with_the_dimensions_as_labels(exporter):
    lines = emf_lines(
        (metrics.REQUESTS, 1, {"route": REQUEST["route"], "status_class": "4xx"}),
        (metrics.LATENCY, 12.5, {"route": REQUEST["route"], "status_class": "4xx"}),
    )
    assert len(lines) == 1
    assert exporter.take(lines[0]) is True
    assert exporter.take(lines[0]) is True  # a second request

    labels = {**REQUEST, "status_class": "4xx"}
    assert sample(exporter, "shop_requests_total", **labels) == 2
    assert sample(exporter, "shop_latency_milliseconds_count", **labels) == 2
    assert sample(exporter, "shop_latency_milliseconds_sum", **labels) == 25.0
    assert sample(exporter, "shop_latency_milliseconds_bucket", **labels, le="10.0") == 0
    assert sample(exporter, "shop_latency_milliseconds_bucket", **labels, le="25.0") == 2
    # Other label values are other series, untouched.
    assert sample(exporter, "shop_requests_total", **{**labels, "status_class": "2xx"}) is None


def test_every_value_of_a_line_is_observed_and_counts_are_added(exporter):
    lines = emf_lines(
        *[(metrics.EVENT_LAG, lag, {"type": "ProductAdded"}) for lag in (100, 200, 3000)],
        *[(metrics.EVENTS_APPLIED, 1, {"type": "ProductAdded"}) for _ in range(3)],
        (metrics.POINTS_GRANTED, 30, {}),
    )
    for line in lines:
        assert exporter.take(line)

    kind = {**BASE, "type": "ProductAdded"}
    assert sample(exporter, "shop_events_applied_total", **kind) == 3
    assert sample(exporter, "shop_event_lag_milliseconds_count", **kind) == 3
    assert sample(exporter, "shop_event_lag_milliseconds_bucket", **kind, le="250.0") == 2
    assert sample(exporter, "shop_event_lag_milliseconds_bucket", **kind, le="5000.0") == 3
    assert sample(exporter, "shop_points_granted_total", **BASE) == 30


def test_histograms_have_millisecond_buckets_up_to_a_minute(exporter):
    [line] = emf_lines((metrics.UPSTREAM_LATENCY, 7, {"target": "user_api"}))
    exporter.take(line)
    text = _exposition(exporter)
    buckets = [
        float(part.split('le="')[1].split('"')[0])
        for part in text.splitlines()
        if part.startswith("shop_upstream_latency_milliseconds_bucket{")
    ]
    assert buckets[:-1] == [float(b) for b in MILLISECOND_BUCKETS]
    assert buckets[-1] == float("inf")
    assert "# TYPE shop_upstream_latency_milliseconds histogram" in text


def test_other_lines_are_passed_on_and_emf_lines_are_not(exporter):
    passed: list[tuple[str, str]] = []
    sink = exporter.sink(lambda name, line: passed.append((name, line)))
    [emf] = emf_lines((metrics.PRODUCTS_ADDED, 1, {}))
    log_line = json.dumps({"level": "INFO", "message": "request", "service": "user_api"})
    mentions = '{"message": "the word "_aws" in a line that is not JSON'

    for line in (log_line, emf, "Serving user_api on http://127.0.0.1:5001", mentions):
        sink("user_api", line)
    sink.say("two\nlines")

    assert passed == [
        ("user_api", log_line),
        ("user_api", "Serving user_api on http://127.0.0.1:5001"),
        ("user_api", mentions),
        ("localrun", "two"),
        ("localrun", "lines"),
    ]
    assert sample(exporter, "shop_products_added_total", **BASE) == 1


def test_say_goes_to_the_inner_sinks_own_say(exporter):
    class Printer:
        def __init__(self) -> None:
            self.said: list[str] = []

        def __call__(self, name: str, line: str) -> None:
            raise AssertionError("say must not be split into lines here")

        def say(self, text: str) -> None:
            self.said.append(text)

    printer = Printer()
    exporter.sink(printer).say("ready\nmore")
    assert printer.said == ["ready\nmore"]


def test_a_broken_emf_line_is_kept_off_the_terminal_and_counted(exporter):
    broken = {"_aws": {"CloudWatchMetrics": [{"Namespace": "shop", "Metrics": [{"Name": "X"}]}]}}
    assert exporter.take(json.dumps(broken)) is True  # the value X is missing
    assert exporter.unreadable == 1


def test_the_same_name_with_other_labels_is_refused_not_mixed(exporter):
    [first] = emf_lines((metrics.PRODUCTS_ADDED, 1, {}))
    other = json.loads(first)
    other["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = [["service"]]
    exporter.take(first)
    exporter.take(json.dumps(other))
    assert exporter.clashes == 1
    assert sample(exporter, "shop_products_added_total", **BASE) == 1


def test_the_registry_is_its_own(exporter):
    from prometheus_client import REGISTRY

    [line] = emf_lines((metrics.USERS_DELETED, 1, {}))
    exporter.take(line)
    labels = BASE
    assert exporter.registry.get_sample_value("shop_users_deleted_total", labels) == 1
    assert REGISTRY.get_sample_value("shop_users_deleted_total", labels) is None


def test_served_over_http(exporter):
    port = free_port()
    url = exporter.serve("127.0.0.1", port)
    try:
        for line in emf_lines((metrics.COLD_START, 1, {})):
            exporter.take(line)
        assert url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        exporter.stop()
    assert f'shop_cold_start_total{{service="{SERVICE.name}",stage="local"}} 1.0' in text


def _exposition(exporter: Exporter) -> str:
    from prometheus_client import generate_latest

    return generate_latest(exporter.registry).decode()


# -- docs/grafana-dashboard.json --

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def _series(metric: metrics.Metric) -> set[str]:
    """The Prometheus sample names the exporter makes of ``metric``."""
    base = f"shop_{snake(metric.name)}"
    if metric.unit is metrics.COUNT:
        return {f"{base}_total"}
    unit = f"{base}_milliseconds"
    return {f"{unit}_bucket", f"{unit}_sum", f"{unit}_count"}


def _expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            found.append(target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["definition"])
    return found


def test_the_dashboard_queries_only_series_the_exporter_makes():
    known = set().union(*(_series(m) for m in metrics.CATALOGUE))
    used = {name for expr in _expressions() for name in re.findall(r"\bshop_[a-z_]+", expr)}
    assert used - known == set()


def test_the_dashboard_shows_every_metric_of_the_catalogue():
    used = " ".join(_expressions())
    missing = [m.name for m in metrics.CATALOGUE if not any(s in used for s in _series(m))]
    assert missing == []


def test_the_dashboard_filters_by_stage_everywhere():
    for expr in _expressions():
        if "label_values(shop_requests_total, stage)" in expr:
            continue
        assert 'stage="$stage"' in expr, expr
