"""A service that is down, slow or broken: the contract's 503/504/502, fast, and nothing leaked.

Every wait is bounded twice: by the gateway's own timeouts (lowered here through the stage
config so the tests stay quick) and by the stubs, whose stalled replies are released on close.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from chalice.test import Client
from urllib3.exceptions import ConnectTimeoutError, ProtocolError, ReadTimeoutError

from tests.gateway_api.stubs import ClosedPort, Reply, Stub, api_gateway_reply, json_reply
from tests.support.apps import load_app
from tools import services

JSON = {"Content-Type": "application/json"}


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.fixture
def product_down(
    make_gateway: Callable[..., Client], user_stub: Stub, closed_port: ClosedPort
) -> Client:
    return make_gateway(USER_API_URL=user_stub.url, PRODUCT_API_URL=closed_port.url)


def test_service_down_answers_503_fast(product_down: Client) -> None:
    response, elapsed = _timed(lambda: product_down.http.get("/get_products"))

    assert response.status_code == 503
    assert response.json_body == {
        "Code": "ServiceUnavailableError",
        "Message": "product service is unavailable",
    }
    assert response.headers["X-Request-Id"]
    assert elapsed < 1.0


def test_user_service_down_names_the_user_service(
    make_gateway: Callable[..., Client], product_stub: Stub, closed_port: ClosedPort
) -> None:
    client = make_gateway(USER_API_URL=closed_port.url, PRODUCT_API_URL=product_stub.url)

    response = client.http.post("/login_user", headers=JSON, body=b"{}")

    assert response.status_code == 503
    assert response.json_body["Message"] == "user service is unavailable"


def test_user_routes_keep_working_while_products_are_down(
    product_down: Client, user_stub: Stub
) -> None:
    registered_body = {"message": "User registered successfully"}
    user_stub.reply("POST", "/register", json_reply(201, registered_body))
    user_stub.reply("GET", "/users", json_reply(200, []))

    assert product_down.http.get("/products").status_code == 503
    registered = product_down.http.post("/register_user", headers=JSON, body=b'{"username": "a"}')
    listed = product_down.http.get("/users")

    assert registered.status_code == 201
    assert registered.json_body == registered_body
    assert listed.status_code == 200


def test_unresolvable_host_is_503(make_gateway: Callable[..., Client], user_stub: Stub) -> None:
    # .invalid never resolves (RFC 6761), so this needs no network and cannot hit anything.
    client = make_gateway(USER_API_URL=user_stub.url, PRODUCT_API_URL="http://product.invalid")

    response = client.http.get("/products")

    assert response.status_code == 503
    assert response.json_body["Message"] == "product service is unavailable"


def test_slow_service_answers_504_within_the_read_timeout(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub
) -> None:
    client = make_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, UPSTREAM_READ_TIMEOUT="0.3"
    )
    product_stub.reply("GET", "/products", Reply(stall=True))

    response, elapsed = _timed(lambda: client.http.get("/products"))

    assert response.status_code == 504
    assert response.json_body == {
        "Code": "GatewayTimeoutError",
        "Message": "product service timed out",
    }
    assert 0.3 <= elapsed < 2.0


def test_slow_product_service_does_not_slow_user_routes(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub
) -> None:
    # The bound is the read timeout: a user route that waited on the stalled product service (or
    # timed out itself) would take at least that long. 1 s leaves a loaded machine ample slack.
    client = make_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, UPSTREAM_READ_TIMEOUT="1.0"
    )
    product_stub.reply("GET", "/products", Reply(stall=True))
    user_stub.reply("GET", "/users", json_reply(200, []))

    assert client.http.get("/products").status_code == 504
    response, elapsed = _timed(lambda: client.http.get("/users"))

    assert response.status_code == 200
    assert elapsed < 1.0


@pytest.mark.parametrize("head", [False, True], ids=["body", "status line and headers"])
def test_a_trickling_answer_is_cut_at_the_calls_total_deadline(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub, head: bool
) -> None:
    """One byte every 0.2 s never lets a per-read timeout expire (the review's stub, one byte
    every 2 s, got a 200 after 24 s). The read timeout is the whole call's budget, headers and
    body alike: 504 within it, with a second of slack."""
    client = make_gateway(
        USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url, UPSTREAM_READ_TIMEOUT="1.0"
    )
    body = b'[{"product_id": "p-1"}]'  # 4.6 s at this pace, the head about as long again
    product_stub.reply("GET", "/products", Reply(body=body, trickle=0.2, trickle_head=head))

    response, elapsed = _timed(lambda: client.http.get("/products"))

    assert response.status_code == 504
    assert response.json_body == {
        "Code": "GatewayTimeoutError",
        "Message": "product service timed out",
    }
    assert elapsed < 2.0
    # The interrupted connection is not handed to the next call.
    product_stub.reply("GET", "/get_products", json_reply(200, []))
    assert client.http.get("/get_products").status_code == 200


@pytest.fixture
def upstream() -> Any:
    """The gateway's upstream module, as the loaded app uses it."""
    return load_app(services.GATEWAY).upstream


def test_the_body_limit_fits_a_lambda_answer(upstream: Any) -> None:
    """Lambda refuses a response payload over 6 MB (6,291,456 bytes), and the gateway's answer
    carries the body as a JSON string, where escaping can make it longer: a body over the limit
    could never reach the caller anyway, only cost the gateway memory and time."""
    assert 1024 * 1024 <= upstream.MAX_BODY_BYTES <= 5 * 1024 * 1024


def test_an_answer_declared_larger_than_the_limit_is_502(
    gateway: Client, product_stub: Stub, upstream: Any
) -> None:
    big = b"[" + b" " * upstream.MAX_BODY_BYTES + b"]"
    product_stub.reply("GET", "/products", Reply(body=big))

    response = gateway.http.get("/products")

    assert response.status_code == 502
    assert response.json_body == {"Code": "BadGatewayError", "Message": "product service failed"}


@pytest.mark.parametrize("unframed", [False, True], ids=["Content-Length", "until close"])
def test_the_body_limit_is_counted_while_reading(
    gateway: Client,
    product_stub: Stub,
    upstream: Any,
    monkeypatch: pytest.MonkeyPatch,
    unframed: bool,
) -> None:
    """At the limit passes; one byte more is 502, with or without a declared length."""
    monkeypatch.setattr(upstream, "MAX_BODY_BYTES", 100)
    at_limit = b'["' + b"a" * 96 + b'"]'
    product_stub.reply("GET", "/products", Reply(body=at_limit, unframed=unframed))
    product_stub.reply("GET", "/get_products", Reply(body=at_limit + b" ", unframed=unframed))

    passed = gateway.http.get("/products")
    refused = gateway.http.get("/get_products")

    assert (passed.status_code, passed.body) == (200, at_limit)
    assert refused.status_code == 502
    assert refused.json_body == {"Code": "BadGatewayError", "Message": "product service failed"}


@pytest.mark.parametrize("status", [500, 501, 505])
def test_service_failure_is_502_without_its_body(
    gateway: Client, product_stub: Stub, status: int
) -> None:
    leak = b'Traceback (most recent call last): File "/var/task/app.py" secret=hunter2'
    product_stub.reply("GET", "/products/p1", Reply(status=status, body=leak, headers={}))

    response = gateway.http.get("/products/p1")

    assert response.status_code == 502
    assert response.json_body == {"Code": "BadGatewayError", "Message": "product service failed"}
    assert b"Traceback" not in response.body
    assert b"hunter2" not in response.body


# What a deployed service really answers when it fails, and what the caller must get instead.
# API Gateway's own answers are in the contract's {Code, Message} shape too
# (infra/gateway_responses.py rewrites them), so only where an error came from can tell them apart.
UPSTREAM_5XX = {
    "crashed function: DEFAULT_5XX 502": api_gateway_reply(
        "DEFAULT_5XX", 502, "Internal server error"
    ),
    "throttled or failed invoke: DEFAULT_5XX 500": api_gateway_reply(
        "DEFAULT_5XX", 500, "Internal server error"
    ),
    "integration failure: INTEGRATION_FAILURE 502": api_gateway_reply(
        "INTEGRATION_FAILURE", message="Internal server error"
    ),
    "API Gateway unavailable: DEFAULT_5XX 503": api_gateway_reply(
        "DEFAULT_5XX", 503, "Service Unavailable"
    ),
    "function too slow: INTEGRATION_TIMEOUT 504": api_gateway_reply(
        "INTEGRATION_TIMEOUT", message="Endpoint request timed out"
    ),
    "view raised: Chalice's own 500": json_reply(
        500, {"Code": "InternalServerError", "Message": "An internal server error occurred."}
    ),
    "service's own 503 (its table)": json_reply(
        503, {"Code": "ServiceUnavailableError", "Message": "the products table is unavailable"}
    ),
    "not the contract's shape: 504": json_reply(504, {"message": "Endpoint request timed out"}),
}
OURS = {
    500: (502, "BadGatewayError", "product service failed"),
    502: (502, "BadGatewayError", "product service failed"),
    503: (503, "ServiceUnavailableError", "product service is unavailable"),
    504: (504, "GatewayTimeoutError", "product service timed out"),
}


@pytest.mark.parametrize("case", list(UPSTREAM_5XX))
def test_every_upstream_5xx_becomes_the_gateways_own_error_naming_the_service(
    gateway: Client, product_stub: Stub, case: str
) -> None:
    """The caller hears which service failed and how, never API Gateway's "Internal server
    error" or "Endpoint request timed out" about a stack it does not know exists."""
    reply = UPSTREAM_5XX[case]
    product_stub.reply("GET", "/get_products", reply)

    response = gateway.http.get("/get_products", headers={"X-Request-Id": "mine"})

    status, code, message = OURS[reply.status]
    assert response.status_code == status
    assert response.json_body == {"Code": code, "Message": message}
    assert response.headers["X-Request-Id"] == "mine"  # ours, not API Gateway's


def test_api_gateway_4xx_passes_through_unchanged(gateway: Client, user_stub: Stub) -> None:
    """A 4xx is about the request (here the service's stage throttling it): the caller's to see."""
    throttled = api_gateway_reply("THROTTLED")
    user_stub.reply("POST", "/login", throttled)

    response = gateway.http.post("/login_user", headers=JSON, body=b"{}")

    assert response.status_code == 429
    assert response.body == throttled.body


def test_broken_protocol_is_502(gateway: Client, user_stub: Stub) -> None:
    user_stub.reply("GET", "/users", Reply(garbage=True))

    response = gateway.http.get("/users")

    assert response.status_code == 502
    assert response.json_body == {"Code": "BadGatewayError", "Message": "user service failed"}


def test_unconfigured_service_url_is_503_not_500(
    make_gateway: Callable[..., Client], user_stub: Stub
) -> None:
    """A stage deployed before its URLs were written answers like an unreachable service."""
    client = make_gateway(USER_API_URL=user_stub.url, PRODUCT_API_URL="set-by-deploy")

    response = client.http.get("/products")

    assert response.status_code == 503
    assert response.json_body["Message"] == "product service is unavailable"


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (ConnectTimeoutError("connect timed out"), 503, "user service is unavailable"),
        (ReadTimeoutError(None, "/users", "read timed out"), 504, "user service timed out"),
        (ProtocolError("Connection aborted."), 502, "user service failed"),
    ],
    ids=["connect timeout", "read timeout", "protocol error"],
)
def test_client_errors_map_to_the_contract(error: Exception, status: int, message: str) -> None:
    """A connect timeout needs a host that drops SYNs, which loopback cannot fake reliably, so
    the mapping is checked on urllib3's own exception types (the refused and slow cases above
    go through real sockets)."""
    upstream = load_app(services.GATEWAY).upstream

    failure = upstream._failure(upstream.USER, error)

    assert (failure.STATUS_CODE, str(failure)) == (status, message)


def test_body_over_64_kib_is_413_before_any_service_call(gateway: Client, user_stub: Stub) -> None:
    body = b'{"username": "' + b"a" * (64 * 1024) + b'"}'

    response = gateway.http.post("/register_user", headers=JSON, body=body)

    assert response.status_code == 413
    assert response.json_body["Code"] == "PayloadTooLargeError"
    assert user_stub.calls() == []


def test_a_services_own_503_passes_through_with_its_retry_after(
    gateway: Client, product_stub: Stub
) -> None:
    """A service whose store is slow says so itself (svckit.overload): its 503, its message and
    its Retry-After reach the caller unchanged, so the caller knows when to retry (with its
    Idempotency-Key). Told from API Gateway's own 503 by the request id the service echoes."""
    overloaded = {"Code": "ServiceUnavailableError", "Message": "the store is busy"}
    product_stub.reply(
        "GET", "/get_products",
        json_reply(503, overloaded, **{"Retry-After": "2", "X-Request-Id": "retry-me"}),
    )  # fmt: skip

    response = gateway.http.get("/get_products", headers={"X-Request-Id": "retry-me"})

    assert response.status_code == 503
    assert response.json_body == overloaded
    assert response.headers["Retry-After"] == "2"
    assert response.headers["X-Request-Id"] == "retry-me"


def test_a_503_without_the_services_request_id_is_the_gateways_own(
    gateway: Client, product_stub: Stub
) -> None:
    """API Gateway's own 503 (its id, not ours) says nothing the caller can use: the gateway's
    error naming the service, as for every other upstream 5xx."""
    product_stub.reply(
        "GET", "/get_products",
        json_reply(503, {"message": "Service Unavailable"}, **{"Retry-After": "2"}),
    )  # fmt: skip

    response = gateway.http.get("/get_products", headers={"X-Request-Id": "mine"})

    assert response.status_code == 503
    assert response.json_body == {
        "Code": "ServiceUnavailableError",
        "Message": "product service is unavailable",
    }
