"""``GET /products?created_by=`` and ``DELETE /products/{product_id}`` through the real gateway,
on the local system's DynamoDB: the index exists in the table the runner created, a creator's
list pages over the index, and only the creator may delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.system import bearer, call, get, post

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-1234"


def _token_for(gateway: str, name: str) -> str:
    assert post(gateway, "/register_user", {"username": name, "password": PASSWORD}).status == 201
    login = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert login.status == 200, login
    return str(login.json()["access_token"])


def test_created_by_lists_and_deletes_through_the_gateway(
    gateway: str, unique: Callable[[str], str]
) -> None:
    # A user of this test's own: the session's shared users add products in other tests too.
    member = unique("creator")
    member_token = _token_for(gateway, member)
    other_token = _token_for(gateway, unique("other"))
    ids = [unique("mine") for _ in range(4)]
    for product_id in ids:
        body = {"product_id": product_id, "product_name": product_id}
        assert post(gateway, "/products", body, bearer(member_token)).status == 201
    theirs = unique("theirs")
    body = {"product_id": theirs, "product_name": "x"}
    assert post(gateway, "/products", body, bearer(other_token)).status == 201

    # Pages of 2 over the index: every product of the member's once, nobody else's.
    seen, cursor = [], None
    for _ in range(20):
        query = f"created_by={member}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = get(gateway, f"/products?{query}")
        assert page.status == 200, page
        assert page.json(), "no empty page"
        assert all(p["created_by"] == member for p in page.json())
        seen += [p["product_id"] for p in page.json()]
        cursor = page.header("X-Next-Cursor")
        if cursor is None:
            break
    assert set(ids) <= set(seen)
    assert theirs not in seen
    assert len(seen) == len(set(seen)) == len(ids)

    bad = get(gateway, "/products?created_by=x")
    assert bad.status == 400, bad
    assert bad.json()["Message"].startswith("created_by must be"), bad

    # Delete: 401 without a token (at the gateway), 403 for another user, 204 for the creator.
    target = f"/products/{ids[0]}"
    assert call(gateway, "DELETE", target).status == 401
    forbidden = call(gateway, "DELETE", target, headers=bearer(other_token))
    assert forbidden.status == 403, forbidden
    assert get(gateway, target).status == 200
    deleted = call(gateway, "DELETE", target, headers=bearer(member_token))
    assert (deleted.status, deleted.body) == (204, b"")
    assert get(gateway, target).status == 404
    assert call(gateway, "DELETE", target, headers=bearer(member_token)).status == 404
    remaining = get(gateway, f"/products?created_by={member}").json()
    assert ids[0] not in [p["product_id"] for p in remaining]
