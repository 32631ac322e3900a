"""The gateway's ``DELETE /users/{username}``: token checked here first, the 204 passed back."""

from __future__ import annotations

from collections.abc import Callable

from chalice.test import Client

from tests.conftest import bearer
from tests.gateway_api.stubs import Reply, Stub, json_reply


def test_delete_user_is_forwarded_with_the_token_and_the_204_comes_back(
    gateway: Client, user_stub: Stub, product_stub: Stub, issue_token: Callable[..., str]
) -> None:
    token = issue_token("john_doe")
    user_stub.reply("DELETE", "/users/john_doe", Reply(status=204, body=b"", headers={}))

    response = gateway.http.delete("/users/john_doe", headers=bearer(token))

    assert response.status_code == 204
    assert response.body == b""
    [call] = user_stub.calls()
    assert (call.method, call.path) == ("DELETE", "/users/john_doe")
    assert call.headers["authorization"] == f"Bearer {token}"
    assert product_stub.calls() == []


def test_delete_user_without_a_valid_token_never_reaches_the_service(
    gateway: Client, user_stub: Stub
) -> None:
    for headers in ({}, bearer("not-a-token")):
        response = gateway.http.delete("/users/john_doe", headers=headers)
        assert response.status_code == 401
    assert user_stub.calls() == []


def test_delete_user_passes_the_services_403_through(
    gateway: Client, user_stub: Stub, issue_token: Callable[..., str]
) -> None:
    forbidden = {"Code": "ForbiddenError", "Message": "only the user or an admin may delete"}
    user_stub.reply("DELETE", "/users/alice", json_reply(403, forbidden))

    response = gateway.http.delete("/users/alice", headers=bearer(issue_token("bob")))

    assert (response.status_code, response.json_body) == (403, forbidden)
