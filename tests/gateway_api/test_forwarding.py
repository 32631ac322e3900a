"""Each gateway route reaches the right service, and the service's answer comes back unchanged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest
from chalice.local import LambdaEventConverter
from chalice.test import Client

from tests.conftest import bearer
from tests.gateway_api.stubs import Reply, Stub, json_reply
from tests.support.apps import load_app
from tools import services

# (gateway method, gateway path, service, service method, service path, needs a token)
ROUTES = [
    ("POST", "/register_user", "user", "POST", "/register", False),
    ("POST", "/login_user", "user", "POST", "/login", False),
    ("GET", "/users", "user", "GET", "/users", False),
    ("GET", "/users/john_doe", "user", "GET", "/users/john_doe", False),
    ("GET", "/user/john_doe", "user", "GET", "/users/john_doe", False),
    ("PUT", "/user/promote/john_doe", "user", "PUT", "/user/promote/john_doe", True),
    ("POST", "/users/jane/points", "user", "POST", "/users/jane/points", True),
    ("POST", "/add_product", "product", "POST", "/add_product", True),
    ("GET", "/get_products", "product", "GET", "/get_products", False),
    ("GET", "/products", "product", "GET", "/products", False),
    ("POST", "/products", "product", "POST", "/products", True),
    ("GET", "/products/p-1", "product", "GET", "/products/p-1", False),
]
JSON = {"Content-Type": "application/json"}
ROUTE_IDS = [f"{r[0]} {r[1]}" for r in ROUTES]


def _stubs(user_stub: Stub, product_stub: Stub) -> dict[str, Stub]:
    return {"user": user_stub, "product": product_stub}


@pytest.mark.parametrize(
    ("method", "path", "target", "up_method", "up_path", "needs_token"), ROUTES, ids=ROUTE_IDS
)
def test_route_reaches_its_service_and_passes_the_answer_through(
    gateway: Client,
    user_stub: Stub,
    product_stub: Stub,
    issue_token: Callable[..., str],
    method: str,
    path: str,
    target: str,
    up_method: str,
    up_path: str,
    needs_token: bool,
) -> None:
    stubs = _stubs(user_stub, product_stub)
    owner, other = stubs[target], stubs["product" if target == "user" else "user"]
    # Odd spacing and a non-ASCII character: only a byte-for-byte pass-through keeps them.
    answer = b'{"answer":  "from the service", "name": "Jos\xc3\xa9"}'
    owner.reply(
        up_method,
        up_path,
        Reply(status=207, body=answer, headers={"Content-Type": "application/json; charset=utf-8"}),
    )
    sent = b'{"product_id":"p-1",   "product_name": "Laptop"}' if method in ("POST", "PUT") else b""
    headers = {"Content-Type": "application/json", "X-Request-Id": "req-123"}
    if needs_token:
        headers.update(bearer(issue_token("john_doe")))

    response = gateway.http.request(method, path, headers=headers, body=sent)

    assert response.status_code == 207
    assert response.body == answer
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["X-Request-Id"] == "req-123"
    [call] = owner.calls()
    assert (call.method, call.path) == (up_method, up_path)
    assert call.body == sent
    assert call.headers["x-request-id"] == "req-123"
    if sent:
        assert call.headers["content-type"] == "application/json"
    assert other.calls() == []


@pytest.mark.parametrize(
    ("path", "target", "up_path"),
    [("/users", "user", "/users"), ("/get_products", "product", "/get_products"),
     ("/products", "product", "/products")],
)
def test_list_pages_pass_query_link_and_cursor_through(
    gateway: Client, user_stub: Stub, product_stub: Stub, path: str, target: str, up_path: str
) -> None:
    owner = _stubs(user_stub, product_stub)[target]
    link = '<?cursor=eyJrIjoidiJ9&limit=2>; rel="next"'
    page = json_reply(200, [{"n": 1}, {"n": 2}], Link=link, **{"X-Next-Cursor": "eyJrIjoidiJ9"})
    owner.reply("GET", up_path, page)

    response = gateway.http.get(f"{path}?limit=2&cursor=abc_-9")

    assert response.status_code == 200
    assert response.json_body == [{"n": 1}, {"n": 2}]
    assert response.headers["Link"] == link
    assert response.headers["X-Next-Cursor"] == "eyJrIjoidiJ9"
    assert [c.path for c in owner.calls()] == [f"{up_path}?limit=2&cursor=abc_-9"]


def test_last_page_has_no_link(gateway: Client, product_stub: Stub) -> None:
    product_stub.reply("GET", "/products", json_reply(200, []))

    response = gateway.http.get("/products")

    assert response.status_code == 200
    assert "Link" not in response.headers
    assert "X-Next-Cursor" not in response.headers


def test_service_errors_pass_through_unchanged(gateway: Client, user_stub: Stub) -> None:
    conflict = b'{"Code": "ConflictError", "Message": "username is already taken"}'
    user_stub.reply("POST", "/register", Reply(status=409, body=conflict))

    response = gateway.http.post(
        "/register_user", headers={"Content-Type": "application/json"}, body=b'{"username": "x"}'
    )

    assert response.status_code == 409
    assert response.body == conflict


def test_too_many_failed_logins_keeps_its_retry_after(gateway: Client, user_stub: Stub) -> None:
    """user_api's 429 says when to try again; without the header a client can only guess."""
    limited = {
        "Code": "TooManyRequestsError",
        "Message": "username has had too many failed logins: at most 5 in 300 seconds; "
        "retry after 290 seconds",
    }
    user_stub.reply("POST", "/login", json_reply(429, limited, **{"Retry-After": "290"}))

    response = gateway.http.post(
        "/login_user", headers={"Content-Type": "application/json"}, body=b'{"username": "x"}'
    )

    assert response.status_code == 429
    assert response.json_body == limited
    assert response.headers["Retry-After"] == "290"


def test_request_id_is_made_when_absent_and_is_the_one_sent_upstream(
    gateway: Client, user_stub: Stub
) -> None:
    user_stub.reply("GET", "/users", json_reply(200, []))

    response = gateway.http.get("/users")

    returned = response.headers["X-Request-Id"]
    assert returned
    assert [c.headers["x-request-id"] for c in user_stub.calls()] == [returned]


def test_unsafe_request_id_is_replaced_not_forwarded(gateway: Client, user_stub: Stub) -> None:
    user_stub.reply("GET", "/users", json_reply(200, []))

    response = gateway.http.get("/users", headers={"X-Request-Id": "bad id\twith spaces"})

    returned = response.headers["X-Request-Id"]
    assert returned != "bad id\twith spaces"
    assert user_stub.calls()[0].headers["x-request-id"] == returned


def test_authorization_is_forwarded_exactly(
    gateway: Client, user_stub: Stub, issue_token: Callable[..., str]
) -> None:
    token = issue_token("john_doe")
    user_stub.reply("GET", "/users/john_doe", json_reply(200, {"username": "john_doe"}))

    gateway.http.get("/users/john_doe", headers=bearer(token))

    assert user_stub.calls()[0].headers["authorization"] == f"Bearer {token}"


def test_caller_headers_outside_the_list_are_not_forwarded(
    gateway: Client, user_stub: Stub
) -> None:
    user_stub.reply("GET", "/users", json_reply(200, []))

    gateway.http.get("/users", headers={"Cookie": "session=secret", "X-Forwarded-For": "1.2.3.4"})

    sent = user_stub.calls()[0].headers
    assert "cookie" not in sent
    assert sent.get("x-forwarded-for") != "1.2.3.4"  # the caller's own is not passed on


@pytest.mark.parametrize(
    ("path", "stub_name", "up_path"),
    [("/login_user", "user", "/login"), ("/products", "product", "/products")],
)
def test_the_callers_address_is_sent_as_x_forwarded_for_and_nothing_the_caller_wrote(
    gateway: Client,
    user_stub: Stub,
    product_stub: Stub,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    stub_name: str,
    up_path: str,
) -> None:
    """The address is API Gateway's ``identity.sourceIp`` for the caller; a header the caller
    wrote would let it pick the address user_api counts its failed logins against."""
    stub = user_stub if stub_name == "user" else product_stub
    stub.reply("POST" if stub_name == "user" else "GET", up_path, json_reply(200, {}))
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.7")
    forged = {"X-Forwarded-For": "203.0.113.20, 10.0.0.1", **JSON}

    if stub_name == "user":
        gateway.http.post(path, headers=forged, body=b"{}")
    else:
        gateway.http.get(path, headers=forged)

    assert stub.calls()[0].headers["x-forwarded-for"] == "198.51.100.7"


@pytest.mark.parametrize(
    ("path", "up_path"),
    [
        ("/products/a:b@c", "/products/a%3Ab%40c"),
        ("/products/..", "/products/%2E%2E"),
        ("/products/.", "/products/%2E"),
        ("/products/a.b", "/products/a.b"),
    ],
)
def test_path_parameters_are_encoded_into_one_segment(
    gateway: Client, product_stub: Stub, path: str, up_path: str
) -> None:
    gateway.http.get(path)

    assert [c.path for c in product_stub.calls()] == [up_path]


def test_base_url_may_carry_a_stage_path(
    make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub
) -> None:
    """A deployed service's URL is ``https://…execute-api…/api``: the path must be kept."""
    client = make_gateway(USER_API_URL=f"{user_stub.url}/api/", PRODUCT_API_URL=product_stub.url)
    user_stub.reply("GET", "/api/users", json_reply(200, []))

    response = client.http.get("/users?limit=5")

    assert response.status_code == 200
    assert [c.path for c in user_stub.calls()] == ["/api/users?limit=5"]


def test_calls_reuse_one_keep_alive_connection(gateway: Client, user_stub: Stub) -> None:
    user_stub.reply("GET", "/users", json_reply(200, []))

    for _ in range(3):
        assert gateway.http.get("/users").status_code == 200

    assert len({c.client_port for c in user_stub.calls()}) == 1


def test_each_upstream_call_is_logged_with_the_request_id(
    gateway: Client, product_stub: Stub
) -> None:
    """Formatted as it happens (the request id is bound only during the request)."""
    product_stub.reply("GET", "/products", json_reply(200, []))
    log = load_app(services.GATEWAY).service.log
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(log.registered_formatter)
    logging.getLogger(log.name).addHandler(handler)
    try:
        response = gateway.http.get("/products", headers={"X-Request-Id": "log-me"})
    finally:
        logging.getLogger(log.name).removeHandler(handler)

    assert response.status_code == 200
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    [call] = [line for line in lines if line["message"] == "upstream call"]
    assert call["upstream"] == "product_api"
    assert call["status"] == 200
    assert call["request_id"] == "log-me"
    assert isinstance(call["duration_ms"], float)


def test_local_stage_points_at_the_registry_ports() -> None:
    """The stage config, not code, names the services; it must agree with tools/services.py."""
    local = services.GATEWAY.stage_env("local")
    assert local["USER_API_URL"] == f"http://127.0.0.1:{services.USER.port}"
    assert local["PRODUCT_API_URL"] == f"http://127.0.0.1:{services.PRODUCT.port}"
    dev = services.GATEWAY.stage_env("dev")
    assert dev["USER_API_URL"] == dev["PRODUCT_API_URL"] == "set-by-deploy"


def test_an_idempotency_key_goes_to_the_service_and_its_replay_comes_back(
    gateway: Client, user_stub: Stub
) -> None:
    """The services keep the idempotency records (the gateway owns no table): the key is
    forwarded as sent, and a replayed answer says so to the caller."""
    registered = {"message": "User registered successfully", "user": {"username": "ann"}}
    user_stub.reply(
        "POST", "/register", json_reply(201, registered, **{"Idempotent-Replayed": "true"})
    )

    response = gateway.http.post(
        "/register_user", headers={**JSON, "Idempotency-Key": "k-1"}, body=b'{"username":"ann"}'
    )

    assert user_stub.calls()[0].headers["idempotency-key"] == "k-1"
    assert response.status_code == 201
    assert response.json_body == registered
    assert response.headers["Idempotent-Replayed"] == "true"
