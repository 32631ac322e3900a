"""The gateway's own routes: ``/health`` aggregating the services, and ``/greet/{name}``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chalice.test import Client

from tests.gateway_api.stubs import ClosedPort, Reply, Stub, json_reply
from tests.support.system import get, wait_until
from tools import services
from tools.local.process import free_port


def test_health_is_ok_when_both_services_are(
    gateway: Client, user_stub: Stub, product_stub: Stub
) -> None:
    response = gateway.http.get("/health", headers={"X-Request-Id": "probe-1"})

    assert response.status_code == 200
    body = response.json_body
    assert body["status"] == "ok"
    assert body["service"] == "gateway_api"
    assert body["time"].endswith("Z")
    assert set(body["dependencies"]) == {"user_api", "product_api"}
    for dependency in body["dependencies"].values():
        assert dependency["status"] == "ok"
        assert dependency["latency_ms"] >= 0
    # Each service's readiness was asked once, with the caller's request id.
    for stub in (user_stub, product_stub):
        assert [(c.path, c.headers["x-request-id"]) for c in stub.calls()] == [
            ("/health?ready=1", "probe-1")
        ]


def test_health_asks_the_configured_readiness_path(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub
) -> None:
    client = make_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, UPSTREAM_HEALTH_PATH="/ready"
    )
    for stub in (user_stub, product_stub):
        stub.reply("GET", "/ready", json_reply(200, {"status": "ok"}))

    assert client.http.get("/health").status_code == 200
    assert [c.path for c in user_stub.calls() + product_stub.calls()] == ["/ready", "/ready"]


def test_health_reports_a_service_that_is_live_but_not_ready(
    gateway: Client, product_stub: Stub
) -> None:
    """The service answers, but its table or key is not usable: failing, with its status."""
    not_ready = {"Code": "ServiceUnavailableError", "Message": "product_api is not ready: table"}
    product_stub.reply("GET", "/health", json_reply(503, not_ready))

    response = gateway.http.get("/health")

    assert response.status_code == 503
    assert response.json_body["Message"] == "product service is unavailable"
    product = response.json_body["dependencies"]["product_api"]
    assert product == {
        "status": "failing",
        "reason": "not ready",
        "http_status": 503,
        "latency_ms": pytest.approx(product["latency_ms"]),
    }


def test_health_is_503_naming_the_service_that_is_down(
    make_gateway: Callable[..., Client], user_stub: Stub, closed_port: ClosedPort
) -> None:
    client = make_gateway(USER_API_URL=user_stub.url, PRODUCT_API_URL=closed_port.url)

    response = client.http.get("/health")

    assert response.status_code == 503
    body = response.json_body
    assert body["status"] == "degraded"
    assert body["service"] == "gateway_api"
    assert body["Code"] == "ServiceUnavailableError"
    assert body["Message"] == "product service is unavailable"
    assert body["dependencies"]["user_api"]["status"] == "ok"
    product = body["dependencies"]["product_api"]
    assert (product["status"], product["reason"]) == ("failing", "unavailable")


def test_health_names_both_when_both_are_down(
    make_gateway: Callable[..., Client], closed_port: ClosedPort
) -> None:
    client = make_gateway(USER_API_URL=closed_port.url, PRODUCT_API_URL=closed_port.url)

    response = client.http.get("/health")

    assert response.status_code == 503
    assert response.json_body["Message"] == "user service and product service are unavailable"


def test_health_counts_an_unhealthy_answer_as_failing(gateway: Client, user_stub: Stub) -> None:
    user_stub.reply("GET", "/health", json_reply(500, {"status": "broken"}))

    response = gateway.http.get("/health")

    assert response.status_code == 503
    assert response.json_body["Message"] == "user service is unavailable"
    assert response.json_body["dependencies"]["user_api"] == {
        "status": "failing",
        "reason": "not ready",
        "latency_ms": pytest.approx(response.json_body["dependencies"]["user_api"]["latency_ms"]),
        "http_status": 500,
    }
    assert response.json_body["dependencies"]["product_api"]["status"] == "ok"


def test_health_probes_in_parallel_within_its_budget(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub
) -> None:
    """Both services stalled: the answer takes one budget, not two, and names both. (A 1 s
    budget: sequential probes would take 2 s, so the bound below has a second of slack.)"""
    client = make_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, HEALTH_TIMEOUT="1.0"
    )
    for stub in (user_stub, product_stub):
        stub.reply("GET", "/health", Reply(stall=True))

    started = time.monotonic()
    response = client.http.get("/health")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    dependencies = response.json_body["dependencies"].values()
    assert {(d["status"], d["reason"]) for d in dependencies} == {("failing", "timeout")}
    assert 1.0 <= elapsed < 2.0


@pytest.fixture
def serve_gateway(local_keys: Path, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``serve_gateway(**settings)``: the gateway under ``tools.devserver`` (a threaded server,
    as ``make run`` serves it) with those stage settings; returns its URL. For concurrency,
    which ``chalice.test.Client`` cannot show: it swaps ``os.environ`` per request and keeps
    one current request for all threads."""
    started: list[subprocess.Popen[bytes]] = []

    def serve(**settings: str) -> str:
        port = free_port()
        argv = [sys.executable, "-m", "tools.devserver", "--project-dir", "gateway_api"]
        argv += ["--stage", "local", "--port", str(port)]
        for name, value in settings.items():
            argv += ["--set", f"{name}={value}"]
        output = (tmp_path / f"gateway-{port}.log").open("wb")
        process = subprocess.Popen(
            argv, cwd=services.ROOT, stdout=output, stderr=subprocess.STDOUT
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: process.poll() is None and get(url, "/greet/up").status == 200, 30)
        return url

    yield serve
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.integration
def test_concurrent_health_checks_each_get_the_whole_budget(
    serve_gateway: Callable[..., str], user_stub: Stub, product_stub: Stub
) -> None:
    """Ten checks at once, each service answering in 1 s, a 3 s budget: every one healthy.
    (Probes queued behind one shared pool of 4 threads: 20 probes of 1 s in turns of 4 took
    5 s, and the last ones were reported as timeouts.)"""
    for stub in (user_stub, product_stub):
        stub.reply("GET", "/health", Reply(body=b'{"status": "ok"}', delay=1.0))
    url = serve_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, HEALTH_TIMEOUT="3"
    )

    with ThreadPoolExecutor(max_workers=10) as callers:
        replies = list(callers.map(lambda _: get(url, "/health"), range(10)))

    assert [r.status for r in replies] == [200] * 10, [str(r) for r in replies]
    assert len(user_stub.calls()) == len(product_stub.calls()) == 10


def test_greet_answers_plain_text(gateway_client: Client) -> None:
    response = gateway_client.http.get("/greet/John")

    assert response.status_code == 200
    assert response.body == b"Hello, John!"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["X-Request-Id"]


def test_greet_accepts_a_100_character_name(gateway_client: Client) -> None:
    response = gateway_client.http.get("/greet/" + "a" * 100)

    assert response.status_code == 200
    assert response.body == ("Hello, " + "a" * 100 + "!").encode()


def test_greet_rejects_a_name_over_100_characters(gateway_client: Client) -> None:
    response = gateway_client.http.get("/greet/" + "a" * 101)

    assert response.status_code == 400
    assert response.json_body == {
        "Code": "BadRequestError",
        "Message": "name must be at most 100 characters",
    }


def test_greet_calls_no_service(gateway: Client, user_stub: Stub, product_stub: Stub) -> None:
    assert gateway.http.get("/greet/Ann").status_code == 200
    assert user_stub.calls() == product_stub.calls() == []
