"""API.md's walk-through, request for request, through the gateway of the real processes.

This is the one path every reader of the README tries first: register, log in, add a product
with the token, list it. It crosses every hop (gateway -> user_api/product_api -> DynamoDB) and
the token's trip from the signing service to the verifying ones, with the keys ``make run``
generates.
"""

from __future__ import annotations

import pytest

from tests.support.system import bearer, get, post

pytestmark = pytest.mark.integration

WALKER = {"username": "john_doe", "password": "correct-horse-1234"}


def test_walkthrough_through_the_gateway(gateway: str) -> None:
    registered = post(gateway, "/register_user", WALKER)
    assert registered.status == 201, registered
    assert registered.json()["message"] == "User registered successfully"
    assert registered.json()["user"]["username"] == "john_doe"
    assert "password" not in registered.body.decode()

    login = post(gateway, "/login_user", WALKER)
    assert login.status == 200, login
    token = login.json()["access_token"]
    assert login.json()["token_type"] == "Bearer"
    assert login.json()["expires_in"] > 0

    added = post(
        gateway,
        "/add_product",
        {"product_id": "1", "product_name": "Laptop"},
        headers=bearer(token),
    )
    assert added.status == 201, added
    assert added.json()["message"] == "Product added successfully"
    assert added.json()["product"]["product_id"] == "1"
    assert added.json()["product"]["created_by"] == "john_doe"

    listed = get(gateway, "/get_products")
    assert listed.status == 200, listed
    assert listed.header("Content-Type") == "application/json"
    products = {p["product_id"]: p for p in listed.json()}
    assert products["1"]["product_name"] == "Laptop"
    assert products["1"]["created_by"] == "john_doe"


def test_add_product_without_token_is_refused_at_the_gateway(gateway: str) -> None:
    refused = post(gateway, "/add_product", {"product_id": "no-token", "product_name": "X"})
    assert refused.status == 401, refused
    assert refused.json()["Code"] == "UnauthorizedError"
    assert "no-token" not in {p["product_id"] for p in get(gateway, "/get_products").json()}


def test_greet_answers_itself(gateway: str) -> None:
    greeted = get(gateway, "/greet/John")
    assert greeted.status == 200, greeted
    assert (greeted.header("Content-Type") or "").startswith("text/plain")
    assert greeted.body.decode() == "Hello, John!"
