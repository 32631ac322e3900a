"""gateway_api's metrics and trace header: each upstream call's latency by target, each of its own
replacement answers (502/503/504) by target and status, and X-Ray's trace header passed on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chalice.test import Client

from tests.gateway_api.stubs import ClosedPort, Reply, Stub, json_reply
from tests.support.apps import load_app
from tests.support.emf import captured
from tools import services

BASE = {"service": "gateway_api", "stage": "local"}
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def out(gateway):
    with captured(load_app(services.GATEWAY).service) as lines:
        yield lines


def total(out, name: str, **dimensions: str) -> float:
    wanted = {**BASE, **dimensions}
    return sum(p.total for p in out.points(name) if p.dimensions == wanted)


def test_a_forwarded_request_times_its_upstream_call(gateway: Client, user_stub: Stub, out):
    user_stub.reply("GET", "/users/ann", json_reply(200, {"username": "ann"}))

    assert gateway.http.get("/users/ann").status_code == 200

    [call] = out.points("UpstreamLatency")
    assert call.unit == "Milliseconds"
    assert call.dimensions == {**BASE, "target": "user_api"}
    assert len(call.values) == 1
    assert call.values[0] > 0
    assert total(out, "Requests", route="GET /users/{username}", status_class="2xx") == 1
    assert not out.points("UpstreamFailures")


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(status=500, body=b"boom", headers={}), "502"),
        (json_reply(503, {"Code": "ServiceUnavailableError", "Message": "table"}), "503"),
        (json_reply(504, {"message": "Endpoint request timed out"}), "504"),
    ],
)
def test_each_replacement_answer_is_a_failure_by_its_status(
    gateway: Client, product_stub: Stub, out, reply: Reply, status: str
):
    product_stub.reply("GET", "/products/p1", reply)

    assert gateway.http.get("/products/p1").status_code == int(status)

    assert total(out, "UpstreamFailures", target="product_api", status=status) == 1
    assert len(out.points("UpstreamFailures")) == 1
    assert total(out, "Requests", route="GET /products/{product_id}", status_class="5xx") == 1
    assert len(out.points("UpstreamLatency")) == 1  # the call was made and timed all the same


def test_a_service_that_is_down_or_slow(
    make_gateway: Callable[..., Client], product_stub: Stub, closed_port: ClosedPort
):
    client = make_gateway(
        USER_API_URL=closed_port.url, PRODUCT_API_URL=product_stub.url, UPSTREAM_READ_TIMEOUT="0.3"
    )
    product_stub.reply("GET", "/products", Reply(stall=True))
    with client, captured(load_app(services.GATEWAY).service) as out:
        assert client.http.get("/users").status_code == 503
        assert client.http.get("/products").status_code == 504

    assert total(out, "UpstreamFailures", target="user_api", status="503") == 1
    assert total(out, "UpstreamFailures", target="product_api", status="504") == 1
    assert len(out.points("UpstreamFailures")) == 2
    assert {p.dimensions["target"] for p in out.points("UpstreamLatency")} == {
        "user_api",
        "product_api",
    }


def test_a_4xx_from_a_service_is_no_failure(gateway: Client, user_stub: Stub, out):
    assert gateway.http.get("/users/nobody").status_code == 404  # the stub's own 404
    assert not out.points("UpstreamFailures")
    assert total(out, "Requests", route="GET /users/{username}", status_class="4xx") == 1


def test_health_times_both_probes_in_its_one_invocation(gateway: Client, out):
    assert gateway.http.get("/health").status_code == 200

    [line] = [b for b in out.emf() if "UpstreamLatency" in b and b["target"] == "user_api"]
    assert len(line["UpstreamLatency"]) == 1
    assert {p.dimensions["target"] for p in out.points("UpstreamLatency")} == {
        "user_api",
        "product_api",
    }
    assert total(out, "Requests", route="GET /health", status_class="2xx") == 1


# -- X-Ray --


def test_the_invocations_trace_header_goes_with_every_upstream_call(
    gateway: Client, user_stub: Stub, product_stub: Stub, monkeypatch
):
    monkeypatch.setenv("_X_AMZN_TRACE_ID", TRACE)
    user_stub.reply("GET", "/users/ann", json_reply(200, {"username": "ann"}))

    assert gateway.http.get("/users/ann").status_code == 200
    assert gateway.http.get("/health").status_code == 200

    for stub in (user_stub, product_stub):
        calls = stub.calls()
        assert calls
        assert [c.headers.get("x-amzn-trace-id") for c in calls] == [TRACE] * len(calls)


def test_the_trace_header_is_read_per_call(gateway: Client, user_stub: Stub, monkeypatch):
    """Lambda sets the variable anew for each invocation of a warm function."""
    user_stub.reply("GET", "/users/ann", json_reply(200, {"username": "ann"}))
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-00000000-000000000000000000000001")
    gateway.http.get("/users/ann")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-00000000-000000000000000000000002")
    gateway.http.get("/users/ann")

    assert [c.headers.get("x-amzn-trace-id")[-1] for c in user_stub.calls()] == ["1", "2"]


def test_without_a_trace_no_header_is_sent_not_even_the_callers(
    gateway: Client, user_stub: Stub, monkeypatch
):
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    user_stub.reply("GET", "/users/ann", json_reply(200, {"username": "ann"}))

    gateway.http.get("/users/ann", headers={"X-Amzn-Trace-Id": "Root=1-caller-made-this-up"})

    [call] = user_stub.calls()
    assert "x-amzn-trace-id" not in call.headers
