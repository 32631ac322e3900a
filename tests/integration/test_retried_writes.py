"""A write whose answer is lost is retried by botocore, and must not apply twice; a store that is
too slow or throttling is the caller's 503/429 with Retry-After, never a 500.

Against the real engine (DynamoDB Local) through ``DropProxy``, which lets DynamoDB store a write
and then drops its answer, once: exactly what a read timeout or a reset connection does. The
user_api runs in-process (``chalice.test.Client``) with its DynamoDB endpoint set to the proxy.
Before the fix, registering alice answered ``409 username is already taken`` although alice had
just been created, and granting 10 points left 20.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from svckit import aws, dynamo
from tests.support.apps import load_app
from tests.support.dropproxy import DropProxy
from tools import admin, services
from tools.local import dynamodb
from tools.local.process import Child, free_port

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-1234"
USERS = services.USER.stage_env("local")["TABLE_NAME"]
PRODUCTS = services.PRODUCT.stage_env("local")["TABLE_NAME"]
IDEMPOTENCY_RECORDS = services.PRODUCT.stage_env("local")["IDEMPOTENCY_TABLE"]


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """DynamoDB Local in memory, with every table, for this module alone."""
    engine = dynamodb.choose({}, data_dir=None)
    port = free_port()
    child = Child("dynamodb", engine.argv("python", "127.0.0.1", port), {"PATH": "/usr/bin:/bin"})
    url = f"http://127.0.0.1:{port}"
    try:
        dynamodb.create_tables_when_ready(
            url, "local", time.monotonic() + 60, lambda: child.running
        )
        yield url
    finally:
        child.stop()


@pytest.fixture
def proxy(
    engine_url: str, monkeypatch: pytest.MonkeyPatch, local_keys: Path
) -> Iterator[DropProxy]:
    dropping = DropProxy(engine_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dropping.url)
    dynamo.client.cache_clear()
    dynamo.records_client.cache_clear()
    try:
        yield dropping
    finally:
        dynamo.client.cache_clear()
        dynamo.records_client.cache_clear()
        dropping.close()


@pytest.fixture
def user_client(proxy: DropProxy) -> Iterator[Client]:
    module = load_app(services.USER)
    with Client(module.app, stage_name="local", project_dir=str(services.USER.directory)) as c:
        yield c


@pytest.fixture
def product_client(proxy: DropProxy) -> Iterator[Client]:
    module = load_app(services.PRODUCT)
    with Client(module.app, stage_name="local", project_dir=str(services.PRODUCT.directory)) as c:
        yield c


def _post(client: Client, path: str, body: Any, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.http.post(path, headers=headers, body=json.dumps(body))


def _signed_up(user_client: Client, name: str) -> str:
    """Register ``name`` and log in: its token."""
    assert _post(user_client, "/register", {"username": name, "password": PASSWORD})
    login = _post(user_client, "/login", {"username": name, "password": PASSWORD})
    return str(login.json_body["access_token"])


def _with_product(user_client: Client, product_client: Client, name: str) -> str:
    """A user ``name`` who added a product with the same id: the user's token."""
    token = _signed_up(user_client, name)
    added = _post(product_client, "/products", {"product_id": name, "product_name": "x"}, token)
    assert added.status_code == 201, added.body
    return token


def test_a_registration_whose_answer_was_lost_is_a_201_not_a_409(
    user_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    proxy.drop_answer_once("PutItem")

    response = _post(user_client, "/register", {"username": unique_name, "password": PASSWORD})

    assert proxy.dropped == ["PutItem"]
    assert proxy.forwarded.count("PutItem") == 2  # botocore did retry
    assert response.status_code == 201, response.body
    assert response.json_body["user"]["username"] == unique_name
    # And a real second registration is still refused.
    again = _post(user_client, "/register", {"username": unique_name, "password": PASSWORD})
    assert again.status_code == 409


def test_points_granted_once_whose_answer_was_lost_are_added_once(
    user_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    boss, member = f"{unique_name}_boss", f"{unique_name}_m"
    for name in (boss, member):
        assert (
            _post(user_client, "/register", {"username": name, "password": PASSWORD}).status_code
            == 201
        )
    assert admin.grant_role(dynamodb.client(proxy.url), USERS, boss, "admin")
    login = _post(user_client, "/login", {"username": boss, "password": PASSWORD})
    token = login.json_body["access_token"]
    # Whichever call carries the increment (a plain UpdateItem did, before the fix).
    proxy.drop_answer_once("TransactWriteItems")
    proxy.drop_answer_once("UpdateItem")

    granted = _post(user_client, f"/users/{member}/points", {"points": 10}, token)

    assert granted.status_code == 200, granted.body
    assert user_client.http.get(f"/users/{member}").json_body["points"] == 10
    assert granted.json_body["points"] == 10
    assert len(proxy.dropped) == 1
    assert proxy.forwarded.count(proxy.dropped[0]) == 2  # botocore did retry


def test_a_user_deletion_whose_answer_was_lost_is_a_204_not_a_404(
    user_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    assert _post(user_client, "/register", {"username": unique_name, "password": PASSWORD})
    login = _post(user_client, "/login", {"username": unique_name, "password": PASSWORD})
    proxy.drop_answer_once("DeleteItem")

    deleted = user_client.http.delete(
        f"/users/{unique_name}",
        headers={"Authorization": f"Bearer {login.json_body['access_token']}"},
    )

    assert deleted.status_code == 204, deleted.body
    assert proxy.dropped == ["DeleteItem"]
    assert proxy.forwarded.count("DeleteItem") == 2
    assert user_client.http.get(f"/users/{unique_name}").status_code == 404


def test_a_product_deletion_whose_answer_was_lost_is_a_204_not_a_404(
    user_client: Client, product_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    token = _with_product(user_client, product_client, unique_name)
    proxy.drop_answer_once("DeleteItem")

    deleted = product_client.http.delete(
        f"/products/{unique_name}", headers={"Authorization": f"Bearer {token}"}
    )

    assert deleted.status_code == 204, deleted.body
    assert proxy.forwarded.count("DeleteItem") == 2
    assert product_client.http.get(f"/products/{unique_name}").status_code == 404
    again = product_client.http.delete(
        f"/products/{unique_name}", headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status_code == 404  # a new request for what is gone is still a 404


@pytest.fixture
def unique_name() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


@pytest.fixture
def quick_budget(proxy: DropProxy, monkeypatch: pytest.MonkeyPatch) -> aws.Budget:
    """A local budget of fractions of a second, so a stalled store times out quickly; the
    clients made after it carry it."""
    budget = aws.Budget(connect=0.5, read=0.3, attempts=2, request=5.0)
    monkeypatch.setitem(aws.BUDGETS, "local", budget)
    dynamo.client.cache_clear()
    dynamo.records_client.cache_clear()
    return budget


def _assert_busy(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.body
    assert response.json_body["Code"] == code
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Request-Id"]


def test_a_store_too_slow_for_every_attempt_is_a_503_and_the_write_may_be_stored(
    quick_budget: aws.Budget, user_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    """Both attempts outlast the read timeout: the caller hears 503 with Retry-After (not a 500,
    not a 409 for its own first attempt), and the write did reach the store."""
    proxy.stall("PutItem", quick_budget.read * 3, times=quick_budget.attempts)

    response = _post(user_client, "/register", {"username": unique_name, "password": PASSWORD})

    _assert_busy(response, 503, "ServiceUnavailableError")
    assert proxy.forwarded.count("PutItem") == quick_budget.attempts
    assert user_client.http.get(f"/users/{unique_name}").status_code == 200


def test_a_slow_read_is_a_503_too(
    quick_budget: aws.Budget, product_client: Client, proxy: DropProxy
) -> None:
    proxy.stall("Scan", quick_budget.read * 3, times=quick_budget.attempts)

    _assert_busy(product_client.http.get("/get_products"), 503, "ServiceUnavailableError")


def test_a_throttled_store_is_a_429(
    quick_budget: aws.Budget, user_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    proxy.throttle("PutItem", times=quick_budget.attempts)

    response = _post(user_client, "/register", {"username": unique_name, "password": PASSWORD})

    _assert_busy(response, 429, "TooManyRequestsError")
    assert proxy.throttled == ["PutItem"] * quick_budget.attempts
    assert user_client.http.get(f"/users/{unique_name}").status_code == 404  # nothing stored
    assert _post(
        user_client, "/register", {"username": unique_name, "password": PASSWORD}
    ).status_code == 201  # fmt: skip


def test_an_unreachable_store_is_a_503(
    quick_budget: aws.Budget, product_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{free_port()}")
    dynamo.client.cache_clear()
    dynamo.records_client.cache_clear()

    _assert_busy(product_client.http.get("/products/x"), 503, "ServiceUnavailableError")


def test_a_retry_with_the_same_key_finds_out_what_a_503_left_unknown(
    quick_budget: aws.Budget, user_client: Client, product_client: Client, proxy: DropProxy,
    unique_name: str,
) -> None:
    """The store stored the write and then stopped answering (503): the client cannot know.
    Its retry with the same Idempotency-Key is the write's real outcome (201, the same product),
    never a 409 for its own first attempt nor a second product."""
    key = {"Idempotency-Key": str(uuid.uuid4())}
    proxy.stall("PutItem", quick_budget.read * 3, times=quick_budget.attempts, table=USERS)
    first = user_client.http.post(
        "/register", headers={"Content-Type": "application/json", **key},
        body=json.dumps({"username": unique_name, "password": PASSWORD}),
    )  # fmt: skip
    retried = user_client.http.post(
        "/register", headers={"Content-Type": "application/json", **key},
        body=json.dumps({"username": unique_name, "password": PASSWORD}),
    )  # fmt: skip
    assert first.status_code == 503, first.body
    assert retried.status_code == 201, retried.body
    assert retried.json_body["user"]["username"] == unique_name

    token = _post(user_client, "/login", {"username": unique_name, "password": PASSWORD})
    bearer_key = {"Authorization": f"Bearer {token.json_body['access_token']}", **key}
    product = {"product_name": "generated id"}
    proxy.stall("PutItem", quick_budget.read * 3, times=quick_budget.attempts, table=PRODUCTS)
    lost = product_client.http.post(
        "/products", headers={"Content-Type": "application/json", **bearer_key},
        body=json.dumps(product),
    )  # fmt: skip
    found = product_client.http.post(
        "/products", headers={"Content-Type": "application/json", **bearer_key},
        body=json.dumps(product),
    )  # fmt: skip
    assert lost.status_code == 503, lost.body
    assert found.status_code == 201, found.body
    mine = product_client.http.get(f"/products?created_by={unique_name}").json_body
    assert [p["product_id"] for p in mine] == [found.json_body["product"]["product_id"]]


def test_points_retried_with_the_same_key_after_a_503_are_added_once(
    quick_budget: aws.Budget, user_client: Client, proxy: DropProxy, unique_name: str
) -> None:
    """The grant was applied and its answers lost on every attempt (503): the client's retry
    with the same key carries the same ClientRequestToken, which DynamoDB recognises."""
    boss, member = f"{unique_name}_boss", f"{unique_name}_m"
    for name in (boss, member):
        registered = _post(user_client, "/register", {"username": name, "password": PASSWORD})
        assert registered.status_code == 201
    assert admin.grant_role(dynamodb.client(proxy.url), USERS, boss, "admin")
    token = _post(user_client, "/login", {"username": boss, "password": PASSWORD})
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token.json_body['access_token']}",
        "Idempotency-Key": str(uuid.uuid4()),
    }
    proxy.stall("TransactWriteItems", quick_budget.read * 3, times=quick_budget.attempts)

    lost = user_client.http.post(f"/users/{member}/points", headers=headers, body='{"points": 10}')
    retried = user_client.http.post(
        f"/users/{member}/points", headers=headers, body='{"points": 10}'
    )

    assert lost.status_code == 503, lost.body
    assert retried.status_code == 200, retried.body
    assert user_client.http.get(f"/users/{member}").json_body["points"] == 10


@pytest.mark.parametrize("what", ["user", "product"])
def test_a_delete_retried_with_the_same_key_after_a_503_is_a_204_not_a_404(
    quick_budget: aws.Budget, user_client: Client, product_client: Client, proxy: DropProxy,
    unique_name: str, what: str,
) -> None:
    """The delete was applied and every attempt's answer lost (503): the item is gone, so only
    DynamoDB's memory of the keyed request's ClientRequestToken can tell the retry it was its
    own. Before, the retry answered 404 (product) or 401 (the caller's own account gone)."""
    if what == "product":
        token = _with_product(user_client, product_client, unique_name)
        client, path = product_client, f"/products/{unique_name}"
    else:
        token = _signed_up(user_client, unique_name)
        client, path = user_client, f"/users/{unique_name}"
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    proxy.stall("TransactWriteItems", quick_budget.read * 3, times=quick_budget.attempts)

    lost = client.http.delete(path, headers=headers)
    retried = client.http.delete(path, headers=headers)

    assert lost.status_code == 503, lost.body
    assert client.http.get(path).status_code == 404  # the first attempt did delete it
    assert retried.status_code == 204, retried.body
    assert proxy.forwarded.count("TransactWriteItems") == quick_budget.attempts + 1
    unkeyed = client.http.delete(path, headers={"Authorization": f"Bearer {token}"})
    assert unkeyed.status_code in (401, 404)  # a new request for what is gone is not a 204


def test_a_keyed_delete_of_a_product_stored_under_another_spelling_is_recognised_too(
    quick_budget: aws.Budget, user_client: Client, product_client: Client, proxy: DropProxy,
    unique_name: str,
) -> None:
    """The product's creator is stored as ``Name`` and the caller's token says ``name`` (names
    are unique whatever their case). Before, the first conditional delete (on the caller's
    spelling) was refused and a second one (on the stored spelling) deleted it; a retry after a
    503 started again with the first, whose token had never succeeded, and answered 404. The
    creator's account now matches in the first attempt, so the retry is the same request."""
    token = _with_product(user_client, product_client, unique_name)
    dynamodb.client(proxy.url).update_item(
        TableName=PRODUCTS, Key={"product_id": {"S": unique_name}},
        UpdateExpression="SET created_by = :c",
        ExpressionAttributeValues={":c": {"S": unique_name.capitalize()}},
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    stall = quick_budget.read * 3
    proxy.stall("TransactWriteItems", stall, times=quick_budget.attempts, applied_only=True)

    lost = product_client.http.delete(f"/products/{unique_name}", headers=headers)
    retried = product_client.http.delete(f"/products/{unique_name}", headers=headers)

    assert lost.status_code == 503, lost.body
    assert retried.status_code == 204, retried.body


def test_a_keyed_delete_whose_token_is_still_in_use_is_a_429_not_a_500(
    quick_budget: aws.Budget, user_client: Client, product_client: Client, proxy: DropProxy,
    unique_name: str,
) -> None:
    """DynamoDB answers TransactionInProgressException while a ClientRequestToken's first use
    still runs; botocore retries it as throttling, and when its attempts are spent the caller
    hears busy (429, Retry-After), not a 500. The product is still there to delete."""
    token = _with_product(user_client, product_client, unique_name)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    proxy.refuse(
        "TransactWriteItems", "TransactionInProgressException", times=quick_budget.attempts
    )

    busy = product_client.http.delete(f"/products/{unique_name}", headers=headers)
    retried = product_client.http.delete(f"/products/{unique_name}", headers=headers)

    _assert_busy(busy, 429, "TooManyRequestsError")
    assert retried.status_code == 204, retried.body


def test_a_keyed_delete_of_nothing_that_botocore_retried_is_still_a_404(
    user_client: Client, product_client: Client, proxy: DropProxy, unique_name: str,
) -> None:
    """A keyed delete's transaction is recognised by its token when botocore re-sends it after
    an applied attempt, so a failed condition on a re-sent one is real: no such product (404),
    not "our first attempt deleted it" (which the plain DeleteItem must assume)."""
    token = _signed_up(user_client, unique_name)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    proxy.throttle("TransactWriteItems")  # the first attempt refused, unapplied; botocore retries

    response = product_client.http.delete(f"/products/{unique_name}-never", headers=headers)

    assert proxy.throttled == ["TransactWriteItems"]
    assert proxy.forwarded.count("TransactWriteItems") == 1
    assert response.status_code == 404, response.body


def test_a_request_whose_time_is_spent_makes_no_more_calls_and_answers_503(
    proxy: DropProxy, product_client: Client, monkeypatch: pytest.MonkeyPatch,
    issue_token: Any,
) -> None:
    """Each call answers within its read timeout, but slowly: the request stops starting
    calls once its time is spent and answers 503, so the gateway (whose deadline is above a
    request's worst case) hears the service rather than giving up on it."""
    budget = aws.Budget(connect=0.5, read=1.0, attempts=1, request=0.4)
    monkeypatch.setitem(aws.BUDGETS, "local", budget)
    dynamo.client.cache_clear()
    dynamo.records_client.cache_clear()
    token = issue_token("slowpoke", (), "acct-slow")
    proxy.stall("PutItem", 0.5, times=1, table=IDEMPOTENCY_RECORDS)  # the first call: slow
    started = time.monotonic()

    answer = product_client.http.post(
        "/add_product",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                 "Idempotency-Key": str(uuid.uuid4())},
        body=json.dumps({"product_id": "never", "product_name": "x"}),
    )  # fmt: skip

    assert answer.status_code == 503, answer.body
    assert time.monotonic() - started < budget.upstream_deadline
    # The in-progress record made and removed again (bookkeeping is not bounded); the request's
    # own calls stopped: the revocation check and the product were never sent.
    assert proxy.forwarded == ["PutItem", "DeleteItem"]
    assert product_client.http.get("/products/never").status_code == 404
