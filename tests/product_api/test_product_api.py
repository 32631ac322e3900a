"""product_api's routes: what is stored, what is answered, and every way a request can fail."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime

import pytest
from botocore.stub import Stubber

from svckit import dynamo
from tests.conftest import JSON, bearer, post_json
from tools import services

TABLE = services.PRODUCT.stage_env("local")["TABLE_NAME"]
REVOKED = services.PRODUCT.stage_env("local")["REVOKED_ACCOUNTS_TABLE"]
CREATE_PATHS = ["/add_product", "/products"]
LIST_PATHS = ["/products", "/get_products"]
VALID = {"product_id": "p-1", "product_name": "Laptop"}
ID_RULE = "product_id must be 1-64 characters of A-Z a-z 0-9 _ -"
PRICE_RULE = "price must be a number >= 0 with at most 2 decimals"
BAD_CURSOR = "cursor is invalid: pass back the X-Next-Cursor value unchanged"
BAD_LIMIT = "limit must be an integer between 1 and 1000"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def auth(issue_token):
    return {**JSON, **bearer(issue_token("alice"))}


@pytest.fixture
def add(product_client, auth):
    """POST a product as alice; ``raw`` sends the body text exactly as given."""

    def _add(body=None, path="/add_product", raw=None, headers=None):
        text = raw if raw is not None else json.dumps(body)
        return product_client.http.post(path, headers={**auth, **(headers or {})}, body=text)

    return _add


def stored_items(tables) -> list[dict]:
    return tables.scan(TableName=TABLE, ConsistentRead=True)["Items"]


def stored(tables, product_id: str) -> dict:
    key = {"product_id": {"S": product_id}}
    return tables.get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item", {})


def assert_error(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.body
    assert response.json_body == {"Code": code, "Message": message}


def raw_cursor(value: object) -> str:
    text = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


# --- creating ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CREATE_PATHS)
def test_create_answers_201_with_the_product_and_stores_it(add, tables, path):
    before = datetime.now(UTC).replace(microsecond=0)
    body = {**VALID, "price": 999.99, "description": "14 inch, 16 GB"}
    response = add(body, path)
    after = datetime.now(UTC)
    assert response.status_code == 201, response.body
    assert response.json_body["message"] == "Product added successfully"
    product = response.json_body["product"]
    created_at = product.pop("created_at")
    assert product == {
        "product_id": "p-1",
        "product_name": "Laptop",
        "price": 999.99,
        "description": "14 inch, 16 GB",
        "created_by": "alice",
    }
    assert created_at.endswith("Z")
    assert before <= datetime.fromisoformat(created_at) <= after
    item = stored(tables, "p-1")
    # Which attempt wrote it, so a retried insert can tell its own write (svckit.dynamo.put_new).
    assert len(item.pop("write_token")["S"]) == 32
    assert item == {
        "product_id": {"S": "p-1"},
        "product_name": {"S": "Laptop"},
        "price": {"N": "999.99"},
        "description": {"S": "14 inch, 16 GB"},
        "created_by": {"S": "alice"},
        "created_at": {"S": created_at},
    }


def test_seed_000_walkthrough_product_has_no_price_or_description(add, product_client, tables):
    response = add({"product_id": "1", "product_name": "Laptop"})
    assert response.status_code == 201
    product = response.json_body["product"]
    assert set(product) == {"product_id", "product_name", "created_by", "created_at"}
    assert set(stored(tables, "1")) == {
        "product_id", "product_name", "created_by", "created_at", "write_token"
    }  # fmt: skip
    listed = product_client.http.get("/get_products").json_body
    assert listed == [product]


def test_created_by_is_the_token_subject_as_spelled(add, issue_token):
    response = add(VALID, headers=bearer(issue_token("Bob.Smith")))
    assert response.status_code == 201
    assert response.json_body["product"]["created_by"] == "Bob.Smith"


@pytest.mark.parametrize(
    "body", [{"product_name": "Mouse"}, {"product_name": "Mouse", "product_id": None}]
)
def test_post_products_generates_a_uuid4_id_when_absent(add, product_client, tables, body):
    first = add(body, "/products")
    second = add(body, "/products")
    assert first.status_code == second.status_code == 201
    ids = [r.json_body["product"]["product_id"] for r in (first, second)]
    assert ids[0] != ids[1]
    for product_id in ids:
        assert str(uuid.UUID(product_id, version=4)) == product_id
        assert product_client.http.get(f"/products/{product_id}").status_code == 200
    assert len(stored_items(tables)) == 2


def test_post_products_keeps_a_given_id(add):
    response = add({"product_id": "given_ID-7", "product_name": "Mouse"}, "/products")
    assert response.status_code == 201
    assert response.json_body["product"]["product_id"] == "given_ID-7"


def test_product_ids_are_case_sensitive(add, tables):
    assert add({"product_id": "abc", "product_name": "lower"}).status_code == 201
    assert add({"product_id": "ABC", "product_name": "upper"}).status_code == 201
    assert stored(tables, "abc")["product_name"] == {"S": "lower"}
    assert stored(tables, "ABC")["product_name"] == {"S": "upper"}


@pytest.mark.parametrize(
    ("raw_price", "expected", "kind"),
    [
        ("19.99", 19.99, float),
        ("19.90", 19.9, float),
        ("0.5", 0.5, float),
        ("0.01", 0.01, float),
        ("5", 5, int),
        ("5.00", 5, int),
        ("0", 0, int),
        ("-0.0", 0, int),
        ("1e2", 100, int),
        ("1000000000", 1000000000, int),
        ("999999999.99", 999999999.99, float),
    ],
)
def test_price_is_a_json_number_int_when_whole(add, product_client, raw_price, expected, kind):
    raw = f'{{"product_id": "p", "product_name": "x", "price": {raw_price}}}'
    created = add(raw=raw)
    assert created.status_code == 201, created.body
    fetched = product_client.http.get("/products/p")
    listed = product_client.http.get("/products")
    for price in (
        created.json_body["product"]["price"],
        fetched.json_body["price"],
        listed.json_body[0]["price"],
    ):
        assert price == expected
        assert type(price) is kind
    assert f'"price":{json.dumps(expected)}'.encode() in fetched.body


@pytest.mark.parametrize(
    "body",
    [
        {"product_id": "a" * 64, "product_name": "n" * 200, "description": "d" * 2000},
        {"product_id": "Az09_-", "product_name": "Café ☕ 東京", "description": ""},
        {"product_id": "0", "product_name": "x", "price": 0},
    ],
)
def test_boundary_values_are_accepted_and_round_trip(add, product_client, body):
    response = add(body)
    assert response.status_code == 201, response.body
    fetched = product_client.http.get(f"/products/{body['product_id']}").json_body
    for name, value in body.items():
        assert fetched[name] == value


@pytest.mark.parametrize("path", CREATE_PATHS)
def test_duplicate_id_is_409_and_the_original_is_kept(
    add, issue_token, product_client, tables, path
):
    original = add({"product_id": "1", "product_name": "Laptop", "price": 10})
    assert original.status_code == 201
    clash = add(
        {"product_id": "1", "product_name": "Impostor", "price": 1, "description": "mine now"},
        path,
        headers=bearer(issue_token("mallory")),
    )
    assert_error(clash, 409, "ConflictError", "product_id '1' already exists")
    assert product_client.http.get("/products/1").json_body == original.json_body["product"]
    assert len(stored_items(tables)) == 1
    assert stored(tables, "1")["created_by"] == {"S": "alice"}


def test_create_is_one_conditional_put_after_the_callers_revocation_check(add, dynamo_calls):
    """One GetItem of the caller's account in the revoked-accounts table (a deleted account's
    token acts for nobody), then one conditional PutItem; no read of the products table."""
    assert add(VALID).status_code == 201
    assert add(VALID).status_code == 409
    assert [name for name, _ in dynamo_calls] == ["GetItem", "PutItem"] * 2
    for name, params in dynamo_calls:
        if name == "GetItem":
            assert params["TableName"] == REVOKED
            continue
        assert params["TableName"] == TABLE
        assert params["ConditionExpression"] == "attribute_not_exists(#k)"
        assert params["ExpressionAttributeNames"] == {"#k": "product_id"}


# --- validation: every way a body can be wrong; nothing is written --------------------------

FIELD_ERRORS = [
    ({"product_name": "Laptop"}, "product_id is required"),
    ({"product_id": None, "product_name": "Laptop"}, "product_id is required"),
    ({**VALID, "product_id": ""}, ID_RULE),
    ({**VALID, "product_id": "   "}, ID_RULE),
    ({**VALID, "product_id": "a" * 65}, ID_RULE),
    ({**VALID, "product_id": "a.b"}, ID_RULE),
    ({**VALID, "product_id": "a b"}, ID_RULE),
    ({**VALID, "product_id": "a/b"}, ID_RULE),
    ({**VALID, "product_id": "ü"}, ID_RULE),
    ({**VALID, "product_id": "a\n"}, ID_RULE),
    ({**VALID, "product_id": 42}, "product_id must be a string"),
    ({"product_id": "p-1"}, "product_name is required"),
    ({**VALID, "product_name": None}, "product_name is required"),
    ({**VALID, "product_name": ""}, "product_name must not be blank"),
    ({**VALID, "product_name": "   "}, "product_name must not be blank"),
    ({**VALID, "product_name": "\t\n"}, "product_name must not be blank"),
    ({**VALID, "product_name": "n" * 201}, "product_name must be at most 200 characters"),
    ({**VALID, "product_name": ["Laptop"]}, "product_name must be a string"),
    ({**VALID, "product_name": "bad \ud800 text"}, "product_name must be valid Unicode text"),
    ({**VALID, "price": -1}, PRICE_RULE),
    ({**VALID, "price": -0.01}, PRICE_RULE),
    ({**VALID, "price": 1.005}, PRICE_RULE),
    ({**VALID, "price": 0.001}, PRICE_RULE),
    ({**VALID, "price": "19.99"}, PRICE_RULE),
    ({**VALID, "price": True}, PRICE_RULE),
    ({**VALID, "price": False}, PRICE_RULE),
    ({**VALID, "price": [1]}, PRICE_RULE),
    ({**VALID, "price": {"amount": 1}}, PRICE_RULE),
    ({**VALID, "price": 1000000000.01}, "price must be at most 1000000000"),
    ({**VALID, "description": "d" * 2001}, "description must be at most 2000 characters"),
    ({**VALID, "description": 5}, "description must be a string"),
    ({**VALID, "description": "\udfff"}, "description must be valid Unicode text"),
    ({**VALID, "colour": "red"}, "colour is not a known field"),
    ({**VALID, "created_by": "mallory"}, "created_by is not a known field"),
    ({**VALID, "created_at": "2000-01-01T00:00:00Z"}, "created_at is not a known field"),
]


@pytest.mark.parametrize(("body", "message"), FIELD_ERRORS)
def test_add_product_rejects_bad_fields_by_name_and_rule(add, tables, body, message):
    assert_error(add(body, "/add_product"), 400, "BadRequestError", message)
    assert stored_items(tables) == []


@pytest.mark.parametrize(
    ("body", "message"), [case for case in FIELD_ERRORS if "product_id is required" not in case[1]]
)
def test_post_products_rejects_the_same_bad_fields(add, tables, body, message):
    assert_error(add(body, "/products"), 400, "BadRequestError", message)
    assert stored_items(tables) == []


NOT_JSON = "request body is not valid JSON"
NOT_OBJECT = "request body must be a JSON object"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"product_id": "1", "product_name": ', NOT_JSON),
        ("{not json}", NOT_JSON),
        ("{'product_id': '1'}", NOT_JSON),
        ('{"product_id": "1", "product_name": "x", "price": NaN}', NOT_JSON),
        ('{"product_id": "1", "product_name": "x", "price": Infinity}', NOT_JSON),
        ('{"product_id": "1", "product_name": "x", "price": -Infinity}', NOT_JSON),
        (b'{"product_id": "1", "product_name": "\xff\xfe"}', NOT_JSON),
        ('{"product_id": "1", "product_name": "x", "price": ' + "9" * 5000 + "}", NOT_JSON),
        ('{"product_id": "1", "product_name": "x", "price": 1e400}', PRICE_RULE),
        ('{"product_id": "1", "product_name": "x", "price": 1e-400}', PRICE_RULE),
        ('[{"product_id": "1", "product_name": "Laptop"}]', NOT_OBJECT),
        ('"product"', NOT_OBJECT),
        ("42", NOT_OBJECT),
        ("null", NOT_OBJECT),
        ("", NOT_OBJECT),
        ("[" * 5000 + "]" * 5000, "request body is nested too deeply"),
        ('{"a":' * 3000 + "1" + "}" * 3000, "request body is nested too deeply"),
    ],
)
@pytest.mark.parametrize("path", CREATE_PATHS)
def test_bodies_that_are_not_a_json_object_are_400(add, tables, path, raw, message):
    assert_error(add(path=path, raw=raw), 400, "BadRequestError", message)
    assert stored_items(tables) == []


@pytest.mark.parametrize("path", CREATE_PATHS)
def test_body_over_64_kib_is_413_and_writes_nothing(add, tables, path):
    raw = json.dumps({**VALID, "description": "d" * 70_000})
    response = add(path=path, raw=raw)
    assert_error(
        response, 413, "PayloadTooLargeError", "request body must be at most 65536 bytes"
    )
    assert GENERATED_ID.fullmatch(response.headers["X-Request-Id"])
    assert stored_items(tables) == []


def test_body_of_exactly_64_kib_reaches_validation(add, tables):
    skeleton = json.dumps({**VALID, "description": ""})
    raw = json.dumps({**VALID, "description": "d" * (64 * 1024 - len(skeleton))})
    assert len(raw.encode()) == 64 * 1024
    message = "description must be at most 2000 characters"
    assert_error(add(raw=raw), 400, "BadRequestError", message)
    assert stored_items(tables) == []


def test_a_non_json_content_type_is_refused_not_500(add, tables):
    response = add(VALID, headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "UnsupportedMediaType", "Unsupported media type: text/plain")
    assert stored_items(tables) == []


# --- reading one -------------------------------------------------------------------------------


def test_get_one_answers_the_product_with_a_consistent_read(add, product_client, dynamo_calls):
    created = add({**VALID, "price": 12.5, "description": "wireless"}).json_body["product"]
    dynamo_calls.clear()
    response = product_client.http.get("/products/p-1")
    assert response.status_code == 200
    assert response.json_body == created
    assert [name for name, _ in dynamo_calls] == ["GetItem"]
    assert dynamo_calls[0][1]["ConsistentRead"] is True


def test_unknown_product_is_404(add, product_client):
    add(VALID)
    response = product_client.http.get("/products/p-2")
    assert_error(response, 404, "NotFoundError", "product 'p-2' was not found")


@pytest.mark.parametrize(
    ("product_id", "shown"),
    [("bad.id", "bad.id"), ("a" * 65, "a" * 64), ("a%20b", "a%20b"), ("~x~", "~x~")],
)
def test_a_path_id_that_breaks_the_rule_is_404_without_a_table_call(
    product_client, dynamo_calls, product_id, shown
):
    response = product_client.http.get(f"/products/{product_id}")
    assert_error(response, 404, "NotFoundError", f"product {shown!r} was not found")
    assert dynamo_calls == []


def test_reads_need_no_token(add, product_client):
    add(VALID)
    assert product_client.http.get("/products/p-1").status_code == 200
    assert product_client.http.get("/products").status_code == 200
    assert product_client.http.get("/get_products").status_code == 200


# --- listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LIST_PATHS)
def test_empty_table_lists_an_empty_array_without_next_links(product_client, path):
    response = product_client.http.get(path)
    assert response.status_code == 200
    assert response.json_body == []
    assert "Link" not in response.headers
    assert "X-Next-Cursor" not in response.headers


@pytest.mark.parametrize("path", LIST_PATHS)
def test_list_answers_the_public_view_of_every_product(add, product_client, path):
    created = [
        add({"product_id": "1", "product_name": "Laptop", "price": 999.99}),
        add({"product_id": "2", "product_name": "Mouse", "description": "wireless"}),
    ]
    response = product_client.http.get(path)
    assert response.status_code == 200
    expected = [r.json_body["product"] for r in created]
    assert sorted(response.json_body, key=lambda p: p["product_id"]) == expected
    assert "X-Next-Cursor" not in response.headers


@pytest.mark.parametrize("path", LIST_PATHS)
def test_list_pages_by_cursor_until_done_without_repeats(add, product_client, path):
    ids = [f"prod-{i}" for i in range(5)]
    for product_id in ids:
        assert add({"product_id": product_id, "product_name": product_id}).status_code == 201
    seen, sizes, cursor = [], [], None
    for _ in range(10):  # more than enough pages; a loop that never ends is a failure
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = product_client.http.get(f"{path}?{query}")
        assert response.status_code == 200, response.body
        sizes.append(len(response.json_body))
        seen += [p["product_id"] for p in response.json_body]
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert response.headers["Link"] == f'<?cursor={cursor}&limit=2>; rel="next"'
    else:
        pytest.fail("pagination never ended")
    assert sorted(seen) == ids
    assert len(seen) == len(set(seen)) == 5
    assert all(size <= 2 for size in sizes)
    assert sizes[:2] == [2, 2]


def test_following_the_link_header_visits_every_product(add, product_client):
    ids = {f"p{i}" for i in range(5)}
    for product_id in ids:
        add({"product_id": product_id, "product_name": "x"})
    seen, url = [], "/get_products?limit=2"
    for _ in range(10):
        response = product_client.http.get(url)
        seen += [p["product_id"] for p in response.json_body]
        link = response.headers.get("Link")
        if link is None:
            break
        match = re.fullmatch(r'<(\?[^>]+)>; rel="next"', link)
        assert match, link
        url = "/get_products" + match.group(1)
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5


def test_each_page_is_one_limited_scan(add, product_client, dynamo_calls):
    for i in range(3):
        add({"product_id": f"p{i}", "product_name": "x"})
    dynamo_calls.clear()
    first = product_client.http.get("/products?limit=2")
    assert [name for name, _ in dynamo_calls] == ["Scan"]
    assert dynamo_calls[0][1]["Limit"] == 3  # one more than the page: "is there more?"
    assert "ExclusiveStartKey" not in dynamo_calls[0][1]
    dynamo_calls.clear()
    cursor = first.headers["X-Next-Cursor"]
    product_client.http.get(f"/products?limit=2&cursor={cursor}")
    assert [name for name, _ in dynamo_calls] == ["Scan"]
    last_of_first = first.json_body[-1]["product_id"]
    assert dynamo_calls[0][1]["ExclusiveStartKey"] == {"product_id": {"S": last_of_first}}


def test_default_limit_is_100_and_1000_is_allowed(add, product_client, dynamo_calls):
    add(VALID)
    assert product_client.http.get("/products").status_code == 200
    assert product_client.http.get("/products?limit=1000").status_code == 200
    limits = [params["Limit"] for name, params in dynamo_calls if name == "Scan"]
    assert limits == [101, 1001]  # each page reads one item more to know whether more remain


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1", "1.5", "", "2%20"])
def test_bad_limit_is_400(product_client, dynamo_calls, path, limit):
    response = product_client.http.get(f"{path}?limit={limit}")
    assert_error(response, 400, "BadRequestError", BAD_LIMIT)
    assert dynamo_calls == []


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage!",
        "A" * 1025,
        raw_cursor({"username_key": "alice"}),  # another table's cursor
        raw_cursor({"product_id": 1}),
        raw_cursor({"product_id": ""}),
        raw_cursor({"product_id": "a", "extra": "b"}),
        raw_cursor(["product_id"]),
        base64.urlsafe_b64encode(b"not json").decode(),
    ],
)
def test_bad_cursor_is_400(product_client, dynamo_calls, path, cursor):
    response = product_client.http.get(f"{path}?cursor={cursor}")
    assert_error(response, 400, "BadRequestError", BAD_CURSOR)
    assert dynamo_calls == []


# --- health, request ids -----------------------------------------------------------------------


def test_health_answers_ok_without_touching_the_table(product_client, dynamo_calls):
    response = product_client.http.get("/health")
    assert response.status_code == 200
    body = response.json_body
    assert body["status"] == "ok"
    assert body["service"] == "product_api"
    assert datetime.fromisoformat(body["time"]).tzinfo == UTC
    assert dynamo_calls == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/health", None, 200),
        ("GET", "/products", None, 200),
        ("GET", "/products/none", None, 404),
        ("GET", "/products?limit=0", None, 400),
        ("POST", "/add_product", VALID, 201),
        ("POST", "/add_product", {"product_id": "x"}, 400),
        ("POST", "/add_product", {**VALID, "description": "d" * 70_000}, 413),
    ],
)
def test_request_id_is_echoed_when_sent(product_client, auth, method, path, body, status):
    headers = {**auth, "X-Request-Id": "trace-42.a:b_c"}
    text = json.dumps(body) if body is not None else None
    response = product_client.http.request(method, path, headers=headers, body=text or b"")
    assert response.status_code == status
    assert response.headers["X-Request-Id"] == "trace-42.a:b_c"


def test_request_id_is_generated_when_absent_and_differs_per_request(product_client):
    first = product_client.http.get("/health").headers["X-Request-Id"]
    second = product_client.http.get("/products").headers["X-Request-Id"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


def test_missing_token_response_carries_a_request_id(product_client, tables):
    response = post_json(product_client, "/add_product", VALID)
    assert response.status_code == 401
    assert GENERATED_ID.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize("offered", ["has space", "x" * 129, "new\nline", "<script>"])
def test_an_unsafe_request_id_is_replaced_not_echoed(product_client, offered):
    response = product_client.http.get("/health", headers={"X-Request-Id": offered})
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["X-Request-Id"])


# --- DynamoDB failing -------------------------------------------------------------------------

THROTTLED = "the service is busy, retry after a short wait"
CALLS = [
    ("put_item", "POST", "/add_product"),
    ("put_item", "POST", "/products"),
    ("get_item", "GET", "/products/p-1"),
    ("scan", "GET", "/products"),
    ("scan", "GET", "/get_products"),
]


def _call(client, auth, method, path):
    body = json.dumps(VALID) if method == "POST" else b""
    return client.http.request(method, path, headers=auth, body=body)


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
@pytest.mark.parametrize(("operation", "method", "path"), CALLS)
def test_throttling_that_outlasts_the_retries_is_429(
    product_client, tables, auth, code, operation, method, path
):
    with Stubber(dynamo.client()) as stub:
        if method == "POST":
            stub.add_response("get_item", {})  # the caller's account is not revoked
        stub.add_client_error(operation, service_error_code=code, http_status_code=400)
        response = _call(product_client, auth, method, path)
        stub.assert_no_pending_responses()
    assert_error(response, 429, "TooManyRequestsError", THROTTLED)
    assert stored_items(tables) == []


@pytest.mark.parametrize(("operation", "method", "path"), CALLS)
def test_an_unexpected_table_error_is_a_bare_500(product_client, auth, operation, method, path):
    with Stubber(dynamo.client()) as stub:
        if method == "POST":
            stub.add_response("get_item", {})  # the caller's account is not revoked
        stub.add_client_error(
            operation,
            service_error_code="ResourceNotFoundException",
            service_message="Requested resource not found: Table: products-local not found",
            http_status_code=400,
        )
        response = _call(product_client, auth, method, path)
        stub.assert_no_pending_responses()
    assert_error(response, 500, "InternalServerError", "An internal server error occurred.")
    assert b"Traceback" not in response.body
    assert b"products-local" not in response.body
