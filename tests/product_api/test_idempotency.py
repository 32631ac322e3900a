"""Idempotency-Key on the write routes (API.md, "Retries and overload"), in-process on moto: the
first answer replayed, 422 for another request under the same key, 409 while the first runs,
keys scoped by caller, an invalid key refused, records that expire. user_api's routes share the
mechanism (svckit.idempotency, applied to every write route by svckit.web); its own cases are in
tests/user_api/test_idempotency.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from svckit import idempotency
from tests.conftest import bearer, post_json
from tests.support.apps import load_app
from tools import services

PRODUCTS = services.PRODUCT.stage_env("local")["TABLE_NAME"]
RECORDS = services.PRODUCT.stage_env("local")[idempotency.TABLE_SETTING]
LAPTOP = {"product_id": "p1", "product_name": "Laptop", "price": 9.5}


@pytest.fixture
def ann(issue_token) -> dict[str, str]:
    return bearer(issue_token("ann", (), "account-ann"))


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, idempotency.HEADER: key}


def product_count(tables) -> int:
    return len(tables.scan(TableName=PRODUCTS)["Items"])


def test_a_repeat_replays_the_first_answer_without_doing_it_again(product_client, ann, tables):
    key = str(uuid.uuid4())
    first = post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))
    again = post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))

    assert first.status_code == 201, first.body
    assert idempotency.REPLAYED_HEADER not in first.headers
    assert again.status_code == 201  # not the 409 a second insert of p1 would be
    assert again.json_body == first.json_body
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert product_count(tables) == 1


def test_a_generated_id_is_made_once(product_client, ann, tables):
    key = str(uuid.uuid4())
    body = {"product_name": "Lamp"}
    first = post_json(product_client, "/products", body, keyed(ann, key))
    again = post_json(product_client, "/products", body, keyed(ann, key))

    assert first.status_code == 201
    assert again.json_body["product"]["product_id"] == first.json_body["product"]["product_id"]
    assert product_count(tables) == 1


def test_the_same_key_for_another_request_is_a_422(product_client, ann, tables):
    key = str(uuid.uuid4())
    assert post_json(product_client, "/add_product", LAPTOP, keyed(ann, key)).status_code == 201

    other_body = post_json(
        product_client, "/add_product", {**LAPTOP, "product_id": "p2"}, keyed(ann, key)
    )
    other_route = product_client.http.delete("/products/p1", headers=keyed(ann, key))

    for response in (other_body, other_route):
        assert response.status_code == 422, response.body
        assert response.json_body == {
            "Code": "UnprocessableEntityError",
            "Message": "Idempotency-Key was already used for a different request",
        }
    assert product_client.http.get("/products/p1").status_code == 200  # not deleted
    assert product_count(tables) == 1


def test_one_callers_key_never_replays_anothers_answer(product_client, ann, issue_token, tables):
    key = str(uuid.uuid4())
    assert post_json(product_client, "/add_product", LAPTOP, keyed(ann, key)).status_code == 201
    bob = bearer(issue_token("bob", (), "account-bob"))

    response = post_json(product_client, "/add_product", LAPTOP, keyed(bob, key))

    assert response.status_code == 422
    assert "ann" not in json.dumps(response.json_body)


def test_a_repeat_while_the_first_runs_is_a_409(product_client, ann, tables, monkeypatch):
    """The first request is held inside its write until the repeat has been answered."""
    products = load_app(services.PRODUCT).products

    key, started, release = str(uuid.uuid4()), threading.Event(), threading.Event()
    real_create = products.create

    def held_create(*args: Any, **kwargs: Any) -> Any:
        started.set()
        assert release.wait(10)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(products, "create", held_create)
    answers: list[Any] = []
    first = threading.Thread(
        target=lambda: answers.append(
            post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))
        )
    )
    first.start()
    try:
        assert started.wait(10)
        monkeypatch.setattr(products, "create", real_create)
        repeat = post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))
    finally:
        release.set()
        first.join(10)

    assert repeat.status_code == 409, repeat.body
    assert repeat.json_body["Message"] == "a request with this Idempotency-Key is still in progress"
    assert int(repeat.headers["Retry-After"]) >= 1  # when the first's record lapses at the latest
    assert answers[0].status_code == 201
    assert product_count(tables) == 1


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "has space", "tab\there", "caf\u00e9"], ids=["empty", "256", "space",
                                                                        "tab", "non-ascii"]
)  # fmt: skip
def test_an_invalid_key_is_a_400_naming_the_header(product_client, ann, tables, key):
    response = post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))

    assert response.status_code == 400, response.body
    assert "Idempotency-Key" in response.json_body["Message"]
    assert product_count(tables) == 0


def test_a_failed_answer_is_not_kept_so_the_request_can_be_sent_again(product_client, ann, tables):
    key = str(uuid.uuid4())
    invalid = {**LAPTOP, "price": -1}
    assert post_json(product_client, "/add_product", invalid, keyed(ann, key)).status_code == 400
    assert post_json(product_client, "/add_product", invalid, keyed(ann, key)).status_code == 400
    assert tables.scan(TableName=RECORDS)["Items"] == []


def test_a_record_expires_after_a_day(product_client, ann, tables):
    key = str(uuid.uuid4())
    assert post_json(product_client, "/add_product", LAPTOP, keyed(ann, key)).status_code == 201
    [record] = tables.scan(TableName=RECORDS)["Items"]
    assert int(record["expiration"]["N"]) - time.time() == pytest.approx(24 * 3600, abs=60)
    # A day later the record no longer answers: the request is handled anew (not replayed), and
    # its insert is recognised as its own (the same caller and key make the same write token).
    # (DynamoDB's TTL deletes lazily; Powertools compares the expiration itself.)
    tables.update_item(
        TableName=RECORDS, Key={"id": record["id"]}, UpdateExpression="SET expiration = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )  # fmt: skip
    again = post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))
    assert again.status_code == 201
    assert idempotency.REPLAYED_HEADER not in again.headers
    [renewed] = tables.scan(TableName=RECORDS)["Items"]
    assert int(renewed["expiration"]["N"]) > time.time() + 23 * 3600
    assert product_count(tables) == 1


def test_both_deletes_replay_their_204(product_client, ann, tables):
    assert post_json(product_client, "/add_product", LAPTOP, ann).status_code == 201
    key = str(uuid.uuid4())
    first = product_client.http.delete("/products/p1", headers=keyed(ann, key))
    again = product_client.http.delete("/products/p1", headers=keyed(ann, key))
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    plain = product_client.http.delete("/products/p1", headers=ann)
    assert plain.status_code == 404  # without the key it is a new request for what is gone


def test_a_request_without_a_key_writes_no_record(product_client, ann, tables):
    assert post_json(product_client, "/add_product", LAPTOP, ann).status_code == 201
    assert tables.scan(TableName=RECORDS)["Items"] == []


def test_the_same_key_on_another_products_path_is_a_422_not_its_replay(product_client, ann, tables):
    """The route template is the same (/products/{product_id}); the product is not: once,
    p2's delete was answered with p1's 204 and p2 stayed."""
    for product_id in ("p1", "p2"):
        body = {**LAPTOP, "product_id": product_id}
        assert post_json(product_client, "/add_product", body, ann).status_code == 201
    key = str(uuid.uuid4())
    assert product_client.http.delete("/products/p1", headers=keyed(ann, key)).status_code == 204

    other = product_client.http.delete("/products/p2", headers=keyed(ann, key))

    assert other.status_code == 422
    assert product_client.http.get("/products/p2").status_code == 200


def test_another_body_under_a_key_whose_first_attempt_failed_is_not_taken_for_it(
    product_client, ann, tables, monkeypatch
):
    """The first attempt stored its product and then lost the store's answer (503); the
    client's retry under the same key with another body is not answered with the first
    body's product as its own (the write token covers the whole request)."""
    from botocore.exceptions import ReadTimeoutError

    products = load_app(services.PRODUCT).products
    real_create = products.create

    def stored_then_lost(*args: Any, **kwargs: Any) -> Any:
        real_create(*args, **kwargs)
        raise ReadTimeoutError(endpoint_url="http://dynamodb")

    monkeypatch.setattr(products, "create", stored_then_lost)
    key = str(uuid.uuid4())
    assert post_json(product_client, "/add_product", LAPTOP, keyed(ann, key)).status_code == 503
    monkeypatch.setattr(products, "create", real_create)

    changed = post_json(
        product_client, "/add_product", {**LAPTOP, "product_name": "Desk"}, keyed(ann, key)
    )
    same = post_json(product_client, "/add_product", LAPTOP, keyed(ann, key))

    assert changed.status_code == 409  # p1 is someone's earlier write, not this request's
    assert same.status_code == 201  # the first request's retry finds its own write
    assert same.json_body["product"]["product_name"] == "Laptop"
