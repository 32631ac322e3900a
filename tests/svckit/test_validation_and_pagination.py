"""The contract's field rules and the cursor format, at their edges."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

import pytest
from chalice import BadRequestError

from svckit import pagination, validation


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Decimal(0)),
        (19, Decimal(19)),
        (Decimal("19.99"), Decimal("19.99")),
        (Decimal("0.10"), Decimal("0.10")),
        (Decimal("5.000"), Decimal("5")),
        (Decimal("1000000000"), Decimal("1000000000")),
    ],
)
def test_money_accepts_exact_amounts(value, expected):
    assert validation.PRICE.check("price", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        Decimal("-0.01"),
        -1,
        Decimal("1.005"),
        Decimal("NaN"),
        Decimal("Infinity"),
        True,
        "19.99",
        None,
        [1],
    ],
)
def test_money_rejects_negative_fractional_cents_and_non_numbers(value):
    with pytest.raises(
        BadRequestError, match="price must be a number >= 0 with at most 2 decimals"
    ):
        validation.PRICE.check("price", value)


def test_money_has_an_upper_bound():
    with pytest.raises(BadRequestError, match="price must be at most"):
        validation.PRICE.check("price", Decimal("1000000000.01"))


def test_blank_product_name_is_refused_but_inner_spaces_are_fine():
    assert validation.PRODUCT_NAME.check("product_name", "Gaming Laptop") == "Gaming Laptop"
    with pytest.raises(BadRequestError, match="product_name must not be blank"):
        validation.PRODUCT_NAME.check("product_name", "   ")
    with pytest.raises(BadRequestError, match="product_name must not be blank"):
        validation.PRODUCT_NAME.check("product_name", "")


@pytest.mark.parametrize("email", ["a@example.com", "first.last+tag@sub.example.co.uk"])
def test_plausible_emails_pass(email):
    assert validation.EMAIL.check("email", email) == email


@pytest.mark.parametrize(
    "email", ["a@b", "a@@b.com", "a b@c.com", "@c.com", "a@.com", "a@c.", "x" * 250 + "@e.com"]
)
def test_implausible_emails_fail(email):
    with pytest.raises(BadRequestError, match="email must be a valid email address"):
        validation.EMAIL.check("email", email)


def test_cursor_round_trips_and_rejects_other_shapes():
    key = {"product_id": "abc"}
    cursor = pagination.encode_cursor(key)
    assert pagination.decode_cursor(cursor, ("product_id",)) == key
    for bad in [
        "",
        "x" * 2000,
        pagination.encode_cursor({"other": "abc"}),
        pagination.encode_cursor({"product_id": ""}),
        "%%%",
    ]:
        with pytest.raises(BadRequestError):
            pagination.decode_cursor(bad, ("product_id",))


def test_page_response_links_only_when_more_remain():
    last = pagination.page_response([1], None, 10)
    assert "Link" not in last.headers
    assert "X-Next-Cursor" not in last.headers
    more = pagination.page_response([1], {"product_id": "p1"}, 10)
    cursor = more.headers["X-Next-Cursor"]
    assert more.headers["Link"] == f'<?cursor={cursor}&limit=10>; rel="next"'


# Characters str.isdigit() accepts that int() refuses (superscripts, circled digits), digits
# int() would read from other scripts, signs and spaces int() tolerates, and a number too long
# for int() at all (Python caps str-to-int conversion at 4300 digits).
NON_ASCII_OR_LOOSE_LIMITS = [
    "²",
    "①",
    "1²",
    "٣",
    "\uff11\uff10",  # fullwidth 10
    "+5",
    " 5",
    "5 ",
    "1_0",
    "9" * 5000,
]


@pytest.mark.parametrize("raw", NON_ASCII_OR_LOOSE_LIMITS)
def test_parse_page_accepts_only_ascii_digits(raw):
    with pytest.raises(BadRequestError, match="limit must be an integer between 1 and 1000"):
        pagination.parse_page({"limit": raw}, ("product_id",))


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("0010", 10), ("1000", 1000)])
def test_parse_page_reads_ascii_limits(raw, expected):
    assert pagination.parse_page({"limit": raw}, ("product_id",)).limit == expected


LIST_ROUTES = [
    ("user_client", "/users"),
    ("product_client", "/products"),
    ("product_client", "/get_products"),
]


@pytest.mark.parametrize(("client_fixture", "path"), LIST_ROUTES)
@pytest.mark.parametrize("raw", ["²", "①", "٣", "9" * 5000])
def test_every_list_route_answers_a_non_ascii_limit_with_400_not_500(
    request, client_fixture, path, raw
):
    client = request.getfixturevalue(client_fixture)
    response = client.http.get(f"{path}?{urlencode({'limit': raw})}")
    assert response.status_code == 400
    assert response.json_body == {
        "Code": "BadRequestError",
        "Message": "limit must be an integer between 1 and 1000",
    }
