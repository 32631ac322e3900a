"""Pagination through the gateway: ``Link`` and ``X-Next-Cursor`` arrive exactly as the service
sent them, and following ``Link`` from the gateway's URL walks the whole list once.

The services write ``Link`` as a query-only reference (``<?cursor=…&limit=…>``) so it resolves
against whichever URL the client called; this checks that it does so through the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.system import bearer, get, post

pytestmark = pytest.mark.integration

PAGE = 2
MAX_PAGES = 200
_NEXT = re.compile(r'<([^>]*)>;\s*rel="next"')


def _walk(gateway: str, service: str, path: str, key: str) -> list[str]:
    """Follow ``Link`` through the gateway; at every page compare with the service's answer to
    the same request. Returns the keys seen, in order."""
    seen: list[str] = []
    url = f"{gateway}{path}?limit={PAGE}"
    for _ in range(MAX_PAGES):
        parts = urlsplit(url)
        target = f"{parts.path}?{parts.query}"
        via_gateway, direct = get(gateway, target), get(service, target)
        assert via_gateway.status == 200, via_gateway
        assert via_gateway.json() == direct.json()
        for header in ("Link", "X-Next-Cursor"):
            assert via_gateway.header(header) == direct.header(header), header
        items = via_gateway.json()
        assert len(items) <= PAGE
        seen += [item[key] for item in items]
        link = via_gateway.header("Link")
        if link is None:
            assert via_gateway.header("X-Next-Cursor") is None
            return seen
        match = _NEXT.search(link)
        assert match, link
        cursor = via_gateway.header("X-Next-Cursor")
        assert cursor, link
        assert f"cursor={cursor}" in match.group(1), (link, cursor)
        url = urljoin(url, match.group(1))
    raise AssertionError(f"more than {MAX_PAGES} pages")


def test_users_pages_pass_through_the_gateway(
    gateway: str, user_api: str, unique: Callable[[str], str]
) -> None:
    names = [unique("pager") for _ in range(PAGE + 1)]
    for name in names:
        assert post(user_api, "/register", {"username": name, "password": "p" * 12}).status == 201

    seen = _walk(gateway, user_api, "/users", "username")

    assert len(seen) == len(set(seen)), "a user appeared on two pages"
    assert set(names) <= set(seen)


def test_product_pages_pass_through_the_gateway(
    gateway: str, product_api: str, member_token: str, unique: Callable[[str], str]
) -> None:
    ids = [unique("item") for _ in range(PAGE + 1)]
    for product_id in ids:
        added = post(
            gateway,
            "/add_product",
            {"product_id": product_id, "product_name": f"Item {product_id}"},
            headers=bearer(member_token),
        )
        assert added.status == 201, added

    seen = _walk(gateway, product_api, "/get_products", "product_id")

    assert len(seen) == len(set(seen)), "a product appeared on two pages"
    assert set(ids) <= set(seen)


def test_bad_cursor_is_the_services_400_through_the_gateway(gateway: str) -> None:
    reply = get(gateway, "/get_products?cursor=not-a-cursor")
    assert reply.status == 400, reply
    assert reply.json()["Code"] == "BadRequestError"
    assert "cursor" in reply.json()["Message"]


@pytest.mark.parametrize(
    ("service_fixture", "path"), [("user_api", "/users"), ("product_api", "/products")]
)
def test_a_list_that_fills_its_last_page_exactly_ends_without_a_cursor(
    request: pytest.FixtureRequest, service_fixture: str, path: str
) -> None:
    """DynamoDB (and DynamoDB Local; moto does not) returns ``LastEvaluatedKey`` whenever a Scan
    stops at ``Limit``, even with nothing left. A page that ends the list exactly must not hand
    the client a cursor to an empty page."""
    service = request.getfixturevalue(service_fixture)
    everything = get(service, f"{path}?limit=1000")
    assert everything.status == 200, everything
    total = len(everything.json())
    assert 0 < total < 1000
    assert everything.header("X-Next-Cursor") is None

    exact = get(service, f"{path}?limit={total}")

    assert len(exact.json()) == total
    assert exact.header("X-Next-Cursor") is None, exact
    assert exact.header("Link") is None, exact
