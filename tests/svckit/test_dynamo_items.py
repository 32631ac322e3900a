"""svckit.dynamo's own item reading: the fast deserialiser and Scan's unparsed ``Items``.

Every value must come out exactly as boto3's ``TypeDeserializer`` makes it (same types, same
``Decimal`` digits and exponent, sets, ``Binary``), whichever form the item arrives in: botocore's
parsed form (``B`` as bytes) or DynamoDB's wire JSON (``B`` as base64 text).
"""

from __future__ import annotations

import base64
import decimal
import json
import random
import threading
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import boto3
import botocore
import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.serialize import create_serializer
from botocore.stub import Stubber

from svckit import aws, dynamo
from tools import services

KEY = ("product_id",)
TABLE = services.PRODUCT.stage_env("local")["TABLE_NAME"]
WAIT = 10.0  # bounds waits that succeed at once unless something is broken
SERIALIZER = TypeSerializer()
DESERIALIZER = TypeDeserializer()

# One of each type, at the edges that a faster path could get wrong.
EVERY_TYPE: dict[str, Any] = {
    "s": "Laptop",
    "s_empty": "",
    "s_unicode": "caf\u00e9 \u2603 \U0001f600",
    "s_looks_like_a_type": "N",
    "n_int": Decimal(19),
    "n_negative": Decimal("-7"),
    "n_zero": Decimal(0),
    "n_trailing_zero": Decimal("0.10"),
    "n_38_digits": Decimal("1234567890.1234567890123456789012345678"),
    "n_tiny": Decimal("1E-128"),
    "n_huge": Decimal("9.9999999999999999999999999999999999999E+125"),
    "bool_true": True,
    "bool_false": False,
    "null": None,
    "b": Binary(b"\x00\xff binary \x80"),
    "b_empty_text": Binary(b"x"),
    "ss": {"a", "b", "caf\u00e9"},
    "ns": {Decimal("1.5"), Decimal(-2), Decimal("0.10")},
    "bs": {Binary(b"\x01"), Binary(b"\x02\x03")},
    "l": ["x", Decimal(1), True, None, [Decimal("2.50")], {"k": "v"}],
    "l_empty": [],
    "m": {"name": "n", "nested": {"deeper": {"n": Decimal("3.14"), "l": ["a", {"b": False}]}}},
    "m_empty": {},
}


def wire(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` as it travels in DynamoDB's JSON, made by botocore's own request serializer."""
    model = dynamo.client().meta.service_model.operation_model("PutItem")
    request = create_serializer("json").serialize_to_request(
        {"TableName": TABLE, "Item": dynamo.to_item(item) | null_attributes(item)}, model
    )
    return json.loads(request["body"])["Item"]


def null_attributes(item: dict[str, Any]) -> dict[str, Any]:
    """``to_item`` leaves ``None`` out (never writes nulls); the tests still want NULL read."""
    return {k: {"NULL": True} for k, v in item.items() if v is None}


def parsed(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` as botocore hands it over after parsing an answer."""
    return {k: SERIALIZER.serialize(v) for k, v in item.items()}


def boto3_view(item: dict[str, Any]) -> dict[str, Any]:
    return {k: DESERIALIZER.deserialize(v) for k, v in item.items()}


def assert_identical(ours: Any, theirs: Any) -> None:
    """Equal and of the same types all the way down (``Decimal("0.10") == Decimal("0.1")``,
    so the digits are compared as text too)."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert_identical(ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for mine, expected in zip(ours, theirs, strict=True):
            assert_identical(mine, expected)
    elif isinstance(theirs, set):
        assert sorted(map(repr, ours)) == sorted(map(repr, theirs))
    elif isinstance(theirs, Decimal):
        assert str(ours) == str(theirs)
    else:
        assert ours == theirs


def test_every_type_from_the_wire_is_what_boto3_makes():
    item = wire(EVERY_TYPE)
    assert item["b"] == {"B": base64.b64encode(b"\x00\xff binary \x80").decode()}

    ours = dynamo.from_wire_item(item)

    assert_identical(ours, boto3_view(parsed(EVERY_TYPE)))
    assert_identical(ours, EVERY_TYPE)


def test_every_type_parsed_by_botocore_is_what_boto3_makes():
    item = parsed(EVERY_TYPE)
    assert_identical(dynamo.from_item(item), boto3_view(item))


def _random_value(rng: random.Random, depth: int) -> Any:
    kinds = ["s", "n", "bool", "null", "b", "ss", "ns", "bs"] + (["l", "m"] if depth else [])
    kind = rng.choice(kinds)
    if kind == "s":
        return "".join(rng.choice("ab\u00e9\u2603 0N") for _ in range(rng.randint(0, 6)))
    if kind == "n":
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 38)))
        return Decimal(f"{rng.choice(['', '-'])}{digits}E{rng.randint(-60, 60)}")
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "b":
        return Binary(rng.randbytes(rng.randint(1, 8)))
    if kind == "ss":
        return {f"s{rng.randint(0, 99)}" for _ in range(rng.randint(1, 4))}
    if kind == "ns":
        return {Decimal(rng.randint(-999, 999)) / 100 for _ in range(rng.randint(1, 4))}
    if kind == "bs":
        return {Binary(rng.randbytes(3)) for _ in range(rng.randint(1, 4))}
    if kind == "l":
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _random_value(rng, depth - 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("seed", range(20))
def test_random_nested_items_round_trip_exactly(seed):
    rng = random.Random(seed)
    item = {f"a{i}": _random_value(rng, depth=4) for i in range(8)}

    assert_identical(dynamo.from_wire_item(wire(item)), boto3_view(parsed(item)))
    assert_identical(dynamo.from_item(parsed(item)), boto3_view(parsed(item)))


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({}, TypeError),  # no type at all
        ({"X": "1"}, TypeError),  # a type DynamoDB does not have
        ({"N": "1" * 39}, decimal.Inexact),  # more digits than DynamoDB's 38
        ({"N": "1E+200"}, decimal.Overflow),
    ],
)
def test_values_boto3_refuses_are_refused_the_same_way(bad, error):
    with pytest.raises(error):
        DESERIALIZER.deserialize(bad)
    with pytest.raises(error):
        dynamo.from_wire_item({"a": bad})
    with pytest.raises(error):
        dynamo.from_item({"a": bad})


# --- Scan: the wire items reach scan_page, and only scan_page -------------------------------


@pytest.fixture
def products_table(tables, monkeypatch):
    monkeypatch.setenv("TABLE_NAME", TABLE)
    return tables


def test_scan_page_reads_every_type_stored_in_the_table(products_table):
    stored = {"product_id": "every-type", **EVERY_TYPE}
    products_table.put_item(TableName=TABLE, Item=parsed(stored))

    items, last_key = dynamo.scan_page(10, None, KEY)

    assert last_key is None
    [item] = items
    assert_identical(item, boto3_view(parsed(stored)))


def test_scan_page_returns_the_key_to_continue_from(products_table):
    for n in range(3):
        products_table.put_item(
            TableName=TABLE, Item={"product_id": {"S": f"p{n}"}, "n": {"N": str(n)}}
        )

    first, cursor = dynamo.scan_page(2, None, KEY)
    rest, end = dynamo.scan_page(2, cursor, KEY)

    assert cursor is not None
    assert set(cursor) == {"product_id"}
    assert end is None
    assert sorted(i["product_id"] for i in first + rest) == ["p0", "p1", "p2"]
    assert all(type(i["n"]) is Decimal for i in first + rest)


def test_a_page_that_ends_the_table_exactly_has_no_cursor(products_table):
    """Real DynamoDB answers a Scan that stops at ``Limit`` with ``LastEvaluatedKey`` even when
    nothing is left; reading one item more tells the two apart (moto never shows the problem,
    so this is checked on the request: one more than the page, and no cursor back)."""
    for n in range(4):
        products_table.put_item(TableName=TABLE, Item={"product_id": {"S": f"p{n}"}})
    sent = []
    dynamo.client().meta.events.register(
        "provide-client-params.dynamodb.Scan", lambda params, **_: sent.append(params["Limit"])
    )

    first, cursor = dynamo.scan_page(2, None, KEY)
    last, end = dynamo.scan_page(2, cursor, KEY)

    assert sent == [3, 3]
    assert cursor == {"product_id": first[-1]["product_id"]}
    assert len(first) == len(last) == 2
    assert end is None


def test_a_projection_still_reads_the_key_for_the_cursor(products_table):
    for n in range(3):
        products_table.put_item(
            TableName=TABLE, Item={"product_id": {"S": f"p{n}"}, "name": {"S": "x"}}
        )

    items, cursor = dynamo.scan_page(2, None, KEY, "#n", {"#n": "name"})

    assert cursor == {"product_id": items[-1]["product_id"]}


def test_other_scans_with_the_client_get_botocores_usual_answer(products_table):
    products_table.put_item(
        TableName=TABLE, Item={"product_id": {"S": "p"}, "b": {"B": b"\x00\x01"}}
    )

    answer = dynamo.client().scan(TableName=TABLE)

    assert dynamo.WIRE_ITEMS not in answer
    assert answer["Items"] == [{"product_id": {"S": "p"}, "b": {"B": b"\x00\x01"}}]


def test_a_canned_parsed_answer_is_still_read(products_table):
    """A Stubber answers before any HTTP or parsing, so no hook runs: the parsed form is read."""
    with Stubber(dynamo.client()) as stub:
        stub.add_response(
            "scan",
            {"Items": [{"product_id": {"S": "p"}, "b": {"B": b"\x00"}}], "Count": 1},
            {"TableName": TABLE, "Limit": 6},
        )
        items, last_key = dynamo.scan_page(5, None, KEY)

    assert items == [{"product_id": "p", "b": Binary(b"\x00")}]
    assert last_key is None


def test_scan_page_takes_the_wire_path_not_botocores_item_parsing(products_table, monkeypatch):
    products_table.put_item(TableName=TABLE, Item={"product_id": {"S": "p"}})

    def botocore_form(item):
        raise AssertionError("scan_page read botocore-parsed items")

    monkeypatch.setattr(dynamo, "from_item", botocore_form)

    assert dynamo.scan_page(5, None, KEY)[0] == [{"product_id": "p"}]


# --- the client ---------------------------------------------------------------------------------


class FakeClient:
    """Just enough of a botocore client for ``svckit.dynamo`` to make one."""

    def __init__(self) -> None:
        self.meta = SimpleNamespace(events=SimpleNamespace(register=lambda *a, **k: None))


def test_threads_asking_together_share_one_client(monkeypatch):
    """The local server's threads take their first requests at once: one client, not one each.
    The first creation is held until every thread has asked, so without the lock each would
    build its own."""
    release = threading.Event()
    made: list[FakeClient] = []

    def held_client(*args, **kwargs):
        assert release.wait(WAIT)
        made.append(FakeClient())
        return made[-1]

    monkeypatch.setattr(boto3, "client", held_client)
    dynamo.client.cache_clear()
    got = []
    threads = [threading.Thread(target=lambda: got.append(dynamo.client())) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        release.set()
        for thread in threads:
            thread.join(WAIT)
    finally:
        dynamo.client.cache_clear()

    assert len(made) == 1
    assert got == made * 8


def test_cache_clear_makes_a_new_client(tables):
    first = dynamo.client()
    dynamo.client.cache_clear()
    assert dynamo.client() is not first


def test_the_client_keeps_the_retry_budget_and_sends_a_fixed_user_agent(products_table):
    sent = []
    client = dynamo.client()
    client.meta.events.register(
        "before-send.dynamodb.*", lambda request, **_: sent.append(request.headers["User-Agent"])
    )

    dynamo.get({"product_id": "none"})

    assert client.meta.config.read_timeout == aws.budget("local").read
    assert client.meta.config.connect_timeout == aws.budget("local").connect
    # Powertools, once imported, appends its own tag to every session's agent; fine.
    [agent] = sent
    assert agent.startswith(b"svckit Botocore/" + botocore.__version__.encode())
