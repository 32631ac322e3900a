"""``GET /products?created_by=`` (one Query page on the ``by_creator`` index, never a Scan) and
``DELETE /products/{product_id}`` (one conditional DeleteItem: its creator or an admin)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import JSON, bearer, post_json
from tests.product_api.test_product_api import assert_error, stored
from tools import services

TABLE = services.PRODUCT.stage_env("local")["TABLE_NAME"]
REVOKED = services.PRODUCT.stage_env("local")["REVOKED_ACCOUNTS_TABLE"]
BAD_CURSOR = "cursor is invalid: pass back the X-Next-Cursor value unchanged"
CREATED_BY_RULE = "created_by must be 3-32 characters of A-Z a-z 0-9 _ . -"


@pytest.fixture
def add_as(product_client, issue_token):
    def _add(username, product_id, roles=()):
        token = issue_token(username, roles)
        body = {"product_id": product_id, "product_name": f"{product_id} by {username}"}
        response = post_json(product_client, "/products", body, bearer(token))
        assert response.status_code == 201, response.body
        return response.json_body["product"]

    return _add


@pytest.fixture
def delete_as(product_client, issue_token):
    def _delete(username, product_id, roles=()):
        headers = bearer(issue_token(username, roles)) if username else {}
        return product_client.http.delete(f"/products/{product_id}", headers=headers)

    return _delete


def walk(client, query: str, limit: int) -> tuple[list[str], list[int]]:
    """Follow X-Next-Cursor to the end; the ids seen and each page's size."""
    seen, sizes, cursor = [], [], None
    for _ in range(20):
        url = f"/products?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.http.get(url)
        assert response.status_code == 200, response.body
        sizes.append(len(response.json_body))
        seen += [p["product_id"] for p in response.json_body]
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            return seen, sizes
        assert response.headers["Link"] == f'<?cursor={cursor}&limit={limit}>; rel="next"'
    pytest.fail("pagination never ended")


# --- GET /products?created_by= ---------------------------------------------------------------


def test_created_by_pages_through_that_users_products_only(add_as, product_client):
    mine = [add_as("alice", f"a{i}") for i in range(6)]
    for i in range(4):
        add_as("bob", f"b{i}")
    add_as("alicex", "ax")  # a name that only starts like hers

    seen, sizes = walk(product_client, "created_by=alice", limit=2)

    assert sorted(seen) == sorted(p["product_id"] for p in mine)
    assert len(seen) == len(set(seen))
    # 6 products in pages of 2: exactly three full pages, no empty page after the last.
    assert sizes == [2, 2, 2]
    first = product_client.http.get("/products?created_by=alice&limit=100").json_body
    assert sorted(first, key=lambda p: p["product_id"]) == mine


def test_created_by_page_is_one_limited_query_on_the_index_never_a_scan(
    add_as, product_client, dynamo_calls
):
    for i in range(3):
        add_as("alice", f"a{i}")
    dynamo_calls.clear()

    first = product_client.http.get("/products?created_by=alice&limit=2")

    assert [name for name, _ in dynamo_calls] == ["Query"]
    params = dynamo_calls[0][1]
    assert params["IndexName"] == "by_creator"
    assert params["Limit"] == 3  # one more than the page: "is there more?"
    assert params["ExpressionAttributeValues"] == {":c": {"S": "alice"}}
    assert "ExclusiveStartKey" not in params
    dynamo_calls.clear()
    cursor = first.headers["X-Next-Cursor"]
    product_client.http.get(f"/products?created_by=alice&limit=2&cursor={cursor}")
    assert [name for name, _ in dynamo_calls] == ["Query"]
    last = first.json_body[-1]["product_id"]
    assert dynamo_calls[0][1]["ExclusiveStartKey"] == {
        "created_by": {"S": "alice"},
        "product_id": {"S": last},
    }


def test_a_user_without_products_gets_an_empty_list(add_as, product_client):
    add_as("alice", "a1")
    response = product_client.http.get("/products?created_by=nobody_here")
    assert response.status_code == 200
    assert response.json_body == []
    assert "X-Next-Cursor" not in response.headers


def test_created_by_matches_as_stored(add_as, product_client):
    add_as("Alice", "a1")
    assert product_client.http.get("/products?created_by=Alice").json_body[0]["product_id"] == "a1"
    assert product_client.http.get("/products?created_by=alice").json_body == []


@pytest.mark.parametrize("value", ["", "ab", "a" * 33, "bad%20name", "al%2Fice", "%C3%A9lise"])
def test_invalid_created_by_is_a_400_naming_the_field(product_client, tables, value):
    response = product_client.http.get(f"/products?created_by={value}")
    assert_error(response, 400, "BadRequestError", CREATED_BY_RULE)


def test_cursor_of_another_list_is_refused(add_as, product_client):
    for i in range(3):
        add_as("alice", f"a{i}")
        add_as("bob", f"b{i}")
    bobs = product_client.http.get("/products?created_by=bob&limit=1").headers["X-Next-Cursor"]
    plain = product_client.http.get("/products?limit=1").headers["X-Next-Cursor"]
    for cursor in (bobs, plain):
        response = product_client.http.get(f"/products?created_by=alice&cursor={cursor}")
        assert_error(response, 400, "BadRequestError", BAD_CURSOR)
    # And the other way: a created_by cursor is no cursor for the whole list.
    response = product_client.http.get(f"/products?cursor={bobs}")
    assert_error(response, 400, "BadRequestError", BAD_CURSOR)


def test_forged_cursor_for_the_same_user_starts_where_it_says(add_as, product_client):
    for i in range(4):
        add_as("alice", f"a{i}")
    raw = json.dumps({"created_by": "alice", "product_id": "a1"}).encode()
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    response = product_client.http.get(f"/products?created_by=alice&cursor={cursor}")
    assert response.status_code == 200
    assert [p["product_id"] for p in response.json_body] == ["a2", "a3"]


# --- DELETE /products/{product_id} -----------------------------------------------------------


def test_creator_deletes_with_204_then_it_is_404(add_as, delete_as, product_client, tables):
    add_as("alice", "p-1")

    response = delete_as("alice", "p-1")

    assert response.status_code == 204
    assert response.body == b""
    assert stored(tables, "p-1") == {}
    assert product_client.http.get("/products/p-1").status_code == 404
    assert product_client.http.get("/products?created_by=alice").json_body == []
    again = delete_as("alice", "p-1")
    assert_error(again, 404, "NotFoundError", "product 'p-1' was not found")


def test_creator_is_recognised_without_regard_to_case(add_as, delete_as, tables):
    add_as("Alice", "p-1")
    assert delete_as("aLICE", "p-1").status_code == 204
    assert stored(tables, "p-1") == {}


def test_another_user_gets_403_and_the_product_stays(add_as, delete_as, tables):
    add_as("alice", "p-1")

    response = delete_as("bob", "p-1")

    assert_error(
        response, 403, "ForbiddenError", "only the product's creator or an admin may delete it"
    )
    assert stored(tables, "p-1")["created_by"] == {"S": "alice"}


def test_admin_deletes_anyones_product(add_as, delete_as, tables):
    add_as("alice", "p-1")
    assert delete_as("root_admin", "p-1", roles=["admin"]).status_code == 204
    assert stored(tables, "p-1") == {}


def test_unknown_product_is_404_for_anyone(delete_as, tables):
    assert_error(delete_as("bob", "nope"), 404, "NotFoundError", "product 'nope' was not found")
    response = delete_as("root_admin", "nope", roles=["admin"])
    assert_error(response, 404, "NotFoundError", "product 'nope' was not found")


def test_delete_without_a_token_is_401_and_deletes_nothing(add_as, product_client, tables):
    add_as("alice", "p-1")
    response = product_client.http.delete("/products/p-1")
    assert response.status_code == 401
    assert response.json_body["Code"] == "UnauthorizedError"
    response = product_client.http.delete("/products/p-1", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert stored(tables, "p-1") != {}


def test_delete_is_one_conditional_delete_item_and_no_read(add_as, delete_as, dynamo_calls):
    add_as("alice", "p-1")
    add_as("alice", "p-2")
    dynamo_calls.clear()

    assert delete_as("bob", "p-1").status_code == 403
    assert delete_as("alice", "p-1").status_code == 204
    assert delete_as("root_admin", "p-2", roles=["admin"]).status_code == 204

    # Each caller's account is looked up in the revoked-accounts table first (one GetItem);
    # the products table sees one conditional DeleteItem per request and no read.
    assert [name for name, _ in dynamo_calls] == ["GetItem", "DeleteItem"] * 3
    assert {p["TableName"] for name, p in dynamo_calls if name == "GetItem"} == {REVOKED}
    member, creator, admin = (params for name, params in dynamo_calls if name == "DeleteItem")
    for params in (member, creator, admin):
        assert params["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
        assert params["ConditionExpression"].startswith("attribute_exists(#k)")
    assert member["ExpressionAttributeValues"] == {":c": {"S": "bob"}}
    assert creator["ExpressionAttributeValues"] == {":c": {"S": "alice"}}
    assert "#c" in creator["ConditionExpression"]
    assert admin["ConditionExpression"] == "attribute_exists(#k)"


def test_an_invalid_id_is_404_without_asking_the_table(delete_as, dynamo_calls):
    response = delete_as("alice", "bad%20id")
    assert response.status_code == 404
    assert [p["TableName"] for _, p in dynamo_calls] == [REVOKED]  # only the caller's check


def test_delete_needs_no_body_and_ignores_content_type(add_as, product_client, issue_token):
    add_as("alice", "p-1")
    headers = {**JSON, **bearer(issue_token("alice"))}
    assert product_client.http.delete("/products/p-1", headers=headers).status_code == 204
