"""The gateway's ``DELETE /products/{product_id}`` (token checked here first) and
``GET /products?created_by=`` (query passed through), against a stubbed product_api."""

from __future__ import annotations

from collections.abc import Callable

from chalice.test import Client

from tests.conftest import bearer
from tests.gateway_api.stubs import Reply, Stub, json_reply


def test_delete_is_forwarded_with_the_token_and_the_204_comes_back(
    gateway: Client, user_stub: Stub, product_stub: Stub, issue_token: Callable[..., str]
) -> None:
    token = issue_token("john_doe")
    product_stub.reply("DELETE", "/products/p-1", Reply(status=204, body=b"", headers={}))

    response = gateway.http.delete("/products/p-1", headers={**bearer(token), "X-Request-Id": "r1"})

    assert response.status_code == 204
    assert response.body == b""
    [call] = product_stub.calls()
    assert (call.method, call.path) == ("DELETE", "/products/p-1")
    assert call.headers["authorization"] == f"Bearer {token}"
    assert call.headers["x-request-id"] == "r1"
    assert user_stub.calls() == []


def test_delete_without_a_valid_token_is_401_and_never_reaches_the_service(
    gateway: Client, product_stub: Stub
) -> None:
    for headers in ({}, bearer("not-a-token")):
        response = gateway.http.delete("/products/p-1", headers=headers)
        assert response.status_code == 401
        assert response.json_body["Code"] == "UnauthorizedError"
    assert product_stub.calls() == []


def test_delete_passes_the_services_403_and_404_through(
    gateway: Client, product_stub: Stub, issue_token: Callable[..., str]
) -> None:
    forbidden = {"Code": "ForbiddenError", "Message": "only the product's creator or an admin"}
    missing = {"Code": "NotFoundError", "Message": "product 'nope' was not found"}
    product_stub.reply("DELETE", "/products/p-1", json_reply(403, forbidden))
    product_stub.reply("DELETE", "/products/nope", json_reply(404, missing))
    headers = bearer(issue_token("bob"))

    first = gateway.http.delete("/products/p-1", headers=headers)
    second = gateway.http.delete("/products/nope", headers=headers)

    assert (first.status_code, first.json_body) == (403, forbidden)
    assert (second.status_code, second.json_body) == (404, missing)


def test_created_by_and_the_page_pass_through_with_link_and_cursor(
    gateway: Client, product_stub: Stub
) -> None:
    link = '<?cursor=eyJrIjoidiJ9&limit=2>; rel="next"'
    page = json_reply(200, [{"product_id": "a"}], Link=link, **{"X-Next-Cursor": "eyJrIjoidiJ9"})
    product_stub.reply("GET", "/products", page)

    response = gateway.http.get("/products?created_by=john_doe&limit=2&cursor=abc")

    assert response.status_code == 200
    assert response.json_body == [{"product_id": "a"}]
    assert response.headers["Link"] == link
    assert response.headers["X-Next-Cursor"] == "eyJrIjoidiJ9"
    assert [c.path for c in product_stub.calls()] == [
        "/products?created_by=john_doe&limit=2&cursor=abc"
    ]
