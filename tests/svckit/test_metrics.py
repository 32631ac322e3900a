"""svckit.metrics: the contract's names, units and dimensions; one invocation, one flush; the
cold start once; nothing for an empty invocation; whole lines on the log's own path."""

from __future__ import annotations

import io
import json
import threading
import uuid
from pathlib import Path

import pytest
from chalice import Response
from chalice.app import SQSEvent
from chalice.test import Client

from svckit import events, logs, metrics
from svckit.web import Service
from tests.support import lambda_events as le
from tests.support.emf import captured, points
from tests.svckit.test_logs import GatedStream
from tools import services, topology

WAIT = 10.0

# The contract the CloudFormation dashboards and alarms are written against: changing a line
# here means changing them too.
CONTRACT = {
    "Requests": ("Count", ("service", "stage", "route", "status_class")),
    "Latency": ("Milliseconds", ("service", "stage", "route", "status_class")),
    "ColdStart": ("Count", ("service", "stage")),
    "UsersRegistered": ("Count", ("service", "stage")),
    "UsersDeleted": ("Count", ("service", "stage")),
    "LoginsFailed": ("Count", ("service", "stage")),
    "LoginsThrottled": ("Count", ("service", "stage")),
    "ProductsAdded": ("Count", ("service", "stage")),
    "ProductsDeleted": ("Count", ("service", "stage")),
    "PointsGranted": ("Count", ("service", "stage")),
    "UpstreamLatency": ("Milliseconds", ("service", "stage", "target")),
    "UpstreamFailures": ("Count", ("service", "stage", "target", "status")),
    "DependencyFailures": ("Count", ("service", "stage", "dependency", "operation", "kind")),
    "EventsRelayed": ("Count", ("service", "stage", "type")),
    "EventsApplied": ("Count", ("service", "stage", "type")),
    "EventsSkipped": ("Count", ("service", "stage", "type")),
    "EventsFailed": ("Count", ("service", "stage", "type")),
    "EventsDeadLettered": ("Count", ("service", "stage", "type")),
    "EventLag": ("Milliseconds", ("service", "stage", "type")),
}


def test_the_catalogue_is_the_contract():
    declared = {m.name: (m.unit.value, m.dimension_names) for m in metrics.CATALOGUE}
    assert declared == CONTRACT
    assert metrics.NAMESPACE == events.PROJECT == "shop"


def test_one_receive_count_for_the_consumers_and_the_queues():
    assert events.MAX_RECEIVE_COUNT == 5
    assert {s.max_receive_count for s in topology.SUBSCRIPTIONS} == {events.MAX_RECEIVE_COUNT}


@pytest.mark.parametrize("service", services.SERVICES, ids=lambda s: s.name)
def test_no_stage_turns_the_metrics_off(service):
    """Powertools drops every EMF line when either is true; ``svckit.metrics`` honours them."""
    config = service.config()
    scopes = [config, *config.get("stages", {}).values()]
    for scope in scopes:
        for name in ("POWERTOOLS_DEV", "POWERTOOLS_METRICS_DISABLED"):
            assert name not in scope.get("environment_variables", {}), (service.name, name)


# -- a throwaway app: its own Service, so its cold start is this test's --


def _app(tmp_path: Path) -> tuple[Service, Client]:
    name = f"svc_{uuid.uuid4().hex[:8]}"
    (tmp_path / ".chalice").mkdir()
    config = {"version": "2.0", "app_name": name, "stages": {"local": {}}}
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    service = Service(name, tmp_path)
    app = service.app

    @app.route("/items/{item_id}", methods=["GET", "PUT"])
    def item(item_id: str) -> Response:
        if item_id == "boom":
            raise RuntimeError("a bug")
        return Response(body={"id": item_id}, status_code=200)

    @app.on_sqs_message(queue_arn=events.QUEUE_ARN_PLACEHOLDER)
    def quiet(event: SQSEvent) -> None:
        """Adds nothing."""

    @app.on_sqs_message(queue_arn=events.QUEUE_ARN_PLACEHOLDER)
    def busy(event: SQSEvent) -> None:
        for _ in event:
            metrics.add(metrics.EVENTS_APPLIED, 1, type="A")
            metrics.add(metrics.EVENT_LAG, 5, type="A")
        metrics.add(metrics.EVENTS_APPLIED, 1, type="B")

    return service, Client(app, stage_name="local", project_dir=str(tmp_path))


def test_a_request_writes_one_line_with_the_route_not_the_path(tmp_path):
    service, client = _app(tmp_path)
    with client, captured(service) as out:
        response = client.http.get("/items/42")

    assert response.status_code == 200
    [blob] = out.emf()
    assert blob["_aws"]["CloudWatchMetrics"] == [
        {
            "Namespace": "shop",
            "Dimensions": [["service", "stage", "route", "status_class"]],
            "Metrics": [
                {"Name": "Requests", "Unit": "Count"},
                {"Name": "Latency", "Unit": "Milliseconds"},
            ],
        }
    ]
    assert isinstance(blob["_aws"]["Timestamp"], int)
    assert blob["service"] == service.name
    assert blob["stage"] == "local"
    assert blob["route"] == "GET /items/{item_id}"
    assert blob["status_class"] == "2xx"
    assert blob["Requests"] == [1.0]
    [latency] = blob["Latency"]
    assert latency > 0
    assert set(blob) == {"_aws", "service", "stage", "route", "status_class", "Requests", "Latency"}


def test_a_failing_view_counts_as_5xx_and_a_bad_method_as_4xx(tmp_path):
    service, client = _app(tmp_path)
    with client, captured(service) as out:
        assert client.http.get("/items/boom").status_code == 500
        assert client.http.put("/items/1").status_code == 200
        # A method the route lacks reaches the app under chalice.test (Chalice answers 405);
        # deployed and under make run the gateway in front answers it and the app sees nothing.
        assert client.http.post("/items/1").status_code == 405

    requests = [
        (p.dimensions["route"], p.dimensions["status_class"]) for p in out.points("Requests")
    ]
    assert requests == [
        ("GET /items/{item_id}", "5xx"),
        ("PUT /items/{item_id}", "2xx"),
        ("POST /items/{item_id}", "4xx"),
    ]


def test_the_cold_start_is_counted_on_the_first_invocation_only(tmp_path):
    service, client = _app(tmp_path)
    with client, captured(service, warm=False) as out:
        client.lambda_.invoke("quiet", le.sqs_event([]))
        client.http.get("/items/1")
        client.lambda_.invoke("quiet", le.sqs_event([]))

    lines = out.emf()
    assert [p.name for p in points(lines[0])] == ["ColdStart"]
    assert points(lines[0])[0].dimensions == {"service": service.name, "stage": "local"}
    # Then only the request: the second empty invocation wrote nothing at all.
    assert [[p.name for p in points(line)] for line in lines[1:]] == [["Requests", "Latency"]]


def test_an_invocation_writes_a_line_per_dimension_set_and_sums_counts(tmp_path):
    service, client = _app(tmp_path)
    body = le.eventbridge_body(le.envelope("A", {}, "shop.test"))
    with client, captured(service) as out:
        client.lambda_.invoke("busy", le.sqs_event([le.sqs_record(body) for _ in range(3)]))

    found = {(p.name, p.dimensions["type"]): p for p in out.points()}
    assert len(out.emf()) == 2  # type A and type B
    assert found["EventsApplied", "A"].values == [3.0]
    assert found["EventLag", "A"].values == [5.0, 5.0, 5.0]
    assert found["EventsApplied", "B"].values == [1.0]


def test_dimensions_must_be_exactly_the_declared_ones():
    invocation = metrics.Invocation()
    with pytest.raises(ValueError, match="route"):
        invocation.add(metrics.REQUESTS, 1, {"route": "GET /"})
    with pytest.raises(ValueError, match="type"):
        invocation.add(metrics.USERS_REGISTERED, 1, {"type": "x"})
    metrics.add(metrics.USERS_REGISTERED)  # outside an invocation: kept nowhere, no error


def test_more_than_a_hundred_values_are_split_across_lines():
    service = Service(f"svc_{uuid.uuid4().hex[:8]}", Path("."))
    service.metrics.cold = False
    with service.metrics.invocation() as invocation:
        for n in range(250):
            metrics.add(metrics.EVENT_LAG, n, type="A")
        metrics.add(metrics.EVENTS_APPLIED, 250, type="A")
        lines = service.metrics.lines(invocation)
    blobs = [json.loads(line) for line in lines]
    assert [len(b["EventLag"]) for b in blobs] == [100, 100, 50]
    assert [b.get("EventsApplied") for b in blobs] == [[250.0], None, None]
    assert sorted(v for b in blobs for v in b["EventLag"]) == [float(n) for n in range(250)]


def test_concurrent_invocations_keep_their_own_values():
    """The local server answers on threads: each request's line has its own route only."""
    service = Service(f"svc_{uuid.uuid4().hex[:8]}", Path("."))
    service.metrics.cold = False
    written: list[str] = []
    service.metrics.write = written.extend
    start = threading.Barrier(8)

    def invoke(n: int) -> None:
        with service.metrics.invocation():
            start.wait(WAIT)
            for _ in range(50):
                metrics.add(metrics.REQUESTS, 1, route=f"GET /r{n}", status_class="2xx")

    threads = [threading.Thread(target=invoke, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    blobs = sorted((json.loads(line) for line in written), key=lambda b: b["route"])
    assert [(b["route"], b["Requests"]) for b in blobs] == [
        (f"GET /r{n}", [50.0]) for n in range(8)
    ]


def test_a_value_added_by_a_thread_after_the_flush_is_dropped():
    """gateway_api's /health may leave a probe thread behind that finishes late."""
    invocation = metrics.Invocation()
    invocation.add(metrics.USERS_REGISTERED, 1, {})
    assert invocation.close()
    invocation.add(metrics.USERS_REGISTERED, 1, {})
    assert invocation.close() == {}


def test_the_lines_go_through_the_log_writer_between_whole_log_lines():
    """Written through the same queue as the log lines: a blocked stream holds both, and they
    come out in order, each on its own line."""
    stream = GatedStream()
    service = f"svc-{uuid.uuid4().hex[:8]}"
    log = logs.make_logger(service, stream=stream)
    recorder = metrics.Metrics(service, log)
    recorder.cold = False

    log.info("before")
    assert stream.writing.wait(WAIT)
    with recorder.invocation():
        metrics.add(metrics.PRODUCTS_ADDED)
    log.info("after")
    assert stream.getvalue() == ""
    stream.gate.set()

    handler = log.registered_handler
    assert isinstance(handler, logs.QueuedStreamHandler)
    assert handler.flush_queue(WAIT)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("message") for line in lines] == ["before", None, "after"]
    assert lines[1]["ProductsAdded"] == [1.0]


def test_in_lambda_the_lines_are_written_at_once_to_the_handlers_stream(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "svc-fn")
    stream = io.StringIO()
    service = f"svc-{uuid.uuid4().hex[:8]}"
    log = logs.make_logger(service, stream=stream)
    assert not isinstance(log.registered_handler, logs.QueuedStreamHandler)
    recorder = metrics.Metrics(service, log)

    with recorder.invocation():
        metrics.add(metrics.PRODUCTS_ADDED)

    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["ColdStart"] == [1.0]
    assert line["ProductsAdded"] == [1.0]  # the same dimension set: one line


@pytest.mark.parametrize("switch", ["POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV"])
def test_powertools_switches_turn_the_lines_off(monkeypatch, switch):
    monkeypatch.setenv(switch, "true")
    written: list[str] = []
    recorder = metrics.Metrics("svc-off", logs.make_logger(f"svc-{uuid.uuid4().hex[:8]}"))
    recorder.write = written.extend
    with recorder.invocation():
        metrics.add(metrics.PRODUCTS_ADDED)
    assert written == []


def test_a_failing_write_never_fails_the_invocation():
    recorder = metrics.Metrics("svc-broken", logs.make_logger(f"svc-{uuid.uuid4().hex[:8]}"))

    def broken(lines: list[str]) -> None:
        raise OSError("stdout is gone")

    recorder.write = broken
    with recorder.invocation():
        metrics.add(metrics.PRODUCTS_ADDED)  # no exception out of the block
