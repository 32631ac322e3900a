"""Write routes verify the token at the gateway: a bad one is 401 and no service is called."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from chalice.test import Client

from svckit import keys
from svckit.tokens import TokenIssuer
from tests.conftest import bearer
from tests.gateway_api.stubs import Stub, json_reply
from tests.support.tokens import claims, kid_of, local_signing_key

WRITE_ROUTES = [
    ("POST", "/add_product", "product", "/add_product"),
    ("POST", "/products", "product", "/products"),
    ("PUT", "/user/promote/john_doe", "user", "/user/promote/john_doe"),
    ("POST", "/users/jane/points", "user", "/users/jane/points"),
]
WRITE_IDS = [f"{m} {p}" for m, p, _, _ in WRITE_ROUTES]


def _other_key_pem() -> str:
    pem, _ = keys.new_key_material()
    return pem


def _claims(**changes: object) -> dict[str, object]:
    return claims(sub="john_doe", **changes)


def _bad_authorizations(local_keys: Path) -> dict[str, dict[str, str]]:
    """Each way a caller's credentials can be wrong, as the header it would send."""
    other = keys.load_private_key(_other_key_pem())
    local = local_signing_key(local_keys)
    kid = kid_of(local)
    return {
        "missing": {},
        "not bearer": {"Authorization": "Basic am9objpwdw=="},
        "empty bearer": {"Authorization": "Bearer "},
        "malformed": bearer("not-a-jwt"),
        "expired": bearer(
            jwt.encode(
                _claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                local,
                algorithm="EdDSA",
                headers={"kid": kid},
            )
        ),
        "unknown key": bearer(TokenIssuer(_other_key_pem(), 600).issue("john_doe")),
        "wrong key, right kid": bearer(
            jwt.encode(_claims(), other, algorithm="EdDSA", headers={"kid": kid})
        ),
        "wrong issuer": bearer(
            jwt.encode(_claims(iss="someone-else"), local, algorithm="EdDSA", headers={"kid": kid})
        ),
        "alg none": bearer(jwt.encode(_claims(), None, algorithm="none", headers={"kid": kid})),
    }


BAD_KINDS = [
    "missing",
    "not bearer",
    "empty bearer",
    "malformed",
    "expired",
    "unknown key",
    "wrong key, right kid",
    "wrong issuer",
    "alg none",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize(("method", "path", "target", "up_path"), WRITE_ROUTES, ids=WRITE_IDS)
def test_bad_token_is_401_and_no_service_is_called(
    gateway: Client,
    user_stub: Stub,
    product_stub: Stub,
    local_keys: Path,
    kind: str,
    method: str,
    path: str,
    target: str,
    up_path: str,
) -> None:
    headers = {"Content-Type": "application/json", **_bad_authorizations(local_keys)[kind]}

    response = gateway.http.request(method, path, headers=headers, body=b'{"points": 5}')

    assert response.status_code == 401
    assert response.json_body["Code"] == "UnauthorizedError"
    assert response.json_body["Message"]
    assert response.headers["X-Request-Id"]
    assert user_stub.calls() == []
    assert product_stub.calls() == []


@pytest.mark.parametrize(("method", "path", "target", "up_path"), WRITE_ROUTES, ids=WRITE_IDS)
def test_valid_token_is_forwarded_to_the_service(
    gateway: Client,
    user_stub: Stub,
    product_stub: Stub,
    issue_token: Callable[..., str],
    method: str,
    path: str,
    target: str,
    up_path: str,
) -> None:
    owner = user_stub if target == "user" else product_stub
    owner.reply(method, up_path, json_reply(200, {"ok": True}))
    token = issue_token("john_doe")

    response = gateway.http.request(
        method, path, headers={"Content-Type": "application/json", **bearer(token)}, body=b"{}"
    )

    assert response.status_code == 200
    assert [c.headers["authorization"] for c in owner.calls()] == [f"Bearer {token}"]


def test_token_is_checked_before_the_service_is_even_reachable(gateway_client: Client) -> None:
    """The stock local stage points at 5002, which may be down: a missing token still gets 401,
    because the gateway answers it without trying the service."""
    response = gateway_client.http.post(
        "/add_product", headers={"Content-Type": "application/json"}, body=b"{}"
    )

    assert response.status_code == 401
    assert response.json_body["Code"] == "UnauthorizedError"


def test_read_routes_need_no_token(gateway: Client, product_stub: Stub) -> None:
    product_stub.reply("GET", "/get_products", json_reply(200, []))

    response = gateway.http.get("/get_products")

    assert response.status_code == 200
    assert "authorization" not in product_stub.calls()[0].headers
