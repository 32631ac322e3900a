"""The events of API.md end to end on real processes: the apps, DynamoDB Local's streams, moto's
EventBridge and SQS, and the event workers that run the relays and consumers as Lambda would.

Everything goes through the gateway, as a client would; the only other doors used are the
runner's own (stopping a worker, the dead-letter command), which is what an operator has.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support import endpoints
from tests.support.system import Reply, bearer, call, get, post, wait_until
from tools import services, topology
from tools.local.events import worker_name
from tools.localrun import LocalSystem

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-1234"
POINTS = int(services.USER.stage_env("local")["POINTS_PER_PRODUCT"])
CATCH_UP_SECONDS = 15.0


@pytest.fixture
def member(gateway: str, unique: Callable[[str], str]) -> tuple[str, str]:
    """A new user, registered and logged in through the gateway: (name, token)."""
    name = unique("ev")
    assert post(gateway, "/register_user", {"username": name, "password": PASSWORD}).status == 201
    return name, login(gateway, name)


def login(gateway: str, name: str) -> str:
    reply = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert reply.status == 200, reply
    return str(reply.json()["access_token"])


def add(gateway: str, token: str, product_id: str) -> Reply:
    body = {"product_id": product_id, "product_name": f"Thing {product_id}"}
    return post(gateway, "/add_product", body, bearer(token))


def points(gateway: str, name: str) -> int:
    reply = get(gateway, f"/users/{name}")
    assert reply.status == 200, reply
    return int(reply.json()["points"])


def wait_for_points(gateway: str, name: str, expected: int) -> None:
    wait_until(lambda: points(gateway, name) >= expected, timeout=CATCH_UP_SECONDS)
    assert points(gateway, name) == expected


def settled(gateway: str, name: str, expected: int, seconds: float = 1.5) -> None:
    """``expected`` points now and still after ``seconds`` (a doubled event would show)."""
    wait_for_points(gateway, name, expected)
    time.sleep(seconds)
    assert points(gateway, name) == expected


def test_each_product_added_earns_points_and_a_refused_add_earns_none(gateway, member, unique):
    name, token = member
    first = unique("p")
    assert add(gateway, token, first).status == 201
    wait_for_points(gateway, name, POINTS)
    assert add(gateway, token, first).status == 409  # the same id again
    bad = post(gateway, "/add_product", {"product_id": unique("p")}, bearer(token))
    assert bad.status == 400, bad
    assert add(gateway, token, unique("p")).status == 201
    settled(gateway, name, 2 * POINTS)


def test_forty_concurrent_adds_earn_exactly_forty_times_the_points(gateway, member, unique):
    name, token = member
    ids = [unique("c") for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda pid: add(gateway, token, pid).status, ids))
    assert statuses == [201] * 40
    settled(gateway, name, 40 * POINTS, seconds=2.0)


@pytest.fixture
def user_worker_stopped(system: LocalSystem) -> Iterator[None]:
    """user_api's event worker down (its consumer and relay): started again at the end."""
    name = worker_name(services.USER.name)
    system.stop_service(name)
    try:
        yield
    finally:
        if system.state(name).name != "RUNNING":
            system.supervisor.start(name)


def test_a_consumer_that_was_down_catches_up(
    system: LocalSystem, gateway, member, unique, user_worker_stopped
):
    name, token = member
    for _ in range(3):
        assert add(gateway, token, unique("d")).status == 201
    time.sleep(2.0)  # the events are on the bus and in user_api's queue by now
    assert points(gateway, name) == 0
    system.supervisor.start(worker_name(services.USER.name))
    settled(gateway, name, 3 * POINTS)


def test_deleting_a_user_cascades_and_a_reregistered_name_starts_fresh(gateway, member, unique):
    name, token = member
    for _ in range(3):
        assert add(gateway, token, unique("x")).status == 201
    wait_for_points(gateway, name, 3 * POINTS)
    mine = f"/products?created_by={name}"
    assert len(get(gateway, mine).json()) == 3
    assert call(gateway, "DELETE", f"/users/{name}", headers=bearer(token)).status == 204
    wait_until(lambda: get(gateway, mine).json() == [], timeout=CATCH_UP_SECONDS)
    # The old account's token: refused by user_api and, once it heard, by product_api.
    wait_until(lambda: add(gateway, token, unique("y")).status == 401, timeout=CATCH_UP_SECONDS)
    # The same name, registered again, is a new account: fresh points, its products kept.
    assert post(gateway, "/register_user", {"username": name, "password": PASSWORD}).status == 201
    fresh = login(gateway, name)
    kept = unique("z")
    assert add(gateway, fresh, kept).status == 201
    settled(gateway, name, POINTS)
    assert [p["product_id"] for p in get(gateway, mine).json()] == [kept]
    assert add(gateway, token, unique("y")).status == 401


def _dlq(system: LocalSystem, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTS_PORT": str(system.ports.events)}
    return subprocess.run(
        [sys.executable, "-m", "tools.events", "dlq", *args],
        cwd=services.ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_poison_message_is_dead_lettered_and_replayed_once_fixed(
    system: LocalSystem, gateway, member, unique
):
    """user_api's processed-events table is gone (an operator's mistake): every try of the
    consumer fails, and after ``max_receive_count`` tries the event waits in the dead-letter
    queue. Once the table is back, the replay command applies it, once."""
    name, token = member
    dynamodb = endpoints.local_client("dynamodb", system.dynamodb_endpoint)
    table = services.USER.stage_env("local")["PROCESSED_EVENTS_TABLE"]
    subscription = topology.subscriptions_of(services.USER)[0]
    dynamodb.delete_table(TableName=table)
    try:
        assert add(gateway, token, unique("poison")).status == 201
        dead_letter = subscription.dead_letter_queue_name(system.stage)

        def dead_lettered() -> bool:
            listing = _dlq(system, "list")
            return listing.returncode == 0 and "ProductAdded" in listing.stdout

        wait_until(dead_lettered, timeout=60)
        assert dead_letter in _dlq(system, "list").stdout
        assert points(gateway, name) == 0
    finally:
        system.create_tables(time.monotonic() + 30)
    replayed = _dlq(system, "replay")
    assert replayed.returncode == 0, replayed.stderr
    settled(gateway, name, POINTS)
    assert "ProductAdded" not in _dlq(system, "list").stdout
    assert _dlq(system, "replay").returncode == 0  # nothing left: nothing applied twice
    settled(gateway, name, POINTS, seconds=0.5)


def test_an_event_delivered_again_minutes_later_is_absorbed_not_dead_lettered(
    system: LocalSystem, gateway, member, unique
):
    """At-least-once delivery: the same ProductAdded reaches user_api's queue twice, a few
    seconds apart. The second is a duplicate that must be deleted as done, not fail until the
    dead-letter queue (DynamoDB refuses a transaction token reused with other parameters for
    ten minutes, which a token derived from the event id would run into)."""
    name, token = member
    assert add(gateway, token, unique("dup")).status == 201
    wait_for_points(gateway, name, POINTS)
    account = get(gateway, f"/users/{name}", bearer(token)).json()
    subscription = topology.subscriptions_of(services.USER)[0]
    sqs = endpoints.local_client("sqs", system.events_endpoint)
    queue = sqs.get_queue_url(QueueName=subscription.queue_name(system.stage))["QueueUrl"]
    dead = sqs.get_queue_url(QueueName=subscription.dead_letter_queue_name(system.stage))
    from svckit import events
    from tests.support import lambda_events as le

    dynamodb = endpoints.local_client("dynamodb", system.dynamodb_endpoint)
    row = dynamodb.get_item(
        TableName=services.USER.stage_env("local")["TABLE_NAME"],
        Key={"username_key": {"S": name.lower()}},
    )["Item"]
    data = {"product_id": unique("dup"), "product_name": "x", "created_by": name}
    data["created_by_account"] = row["account_id"]["S"]  # as product_api's relay sends it
    body = le.eventbridge_body(le.envelope(events.PRODUCT_ADDED, data, events.PRODUCT_SOURCE))
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    settled(gateway, name, 2 * POINTS)
    time.sleep(1.1)  # the record's timestamps differ from the first delivery's
    sqs.send_message(QueueUrl=queue, MessageBody=body)

    def drained() -> bool:
        counts = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return all(v == "0" for v in counts.values())

    time.sleep(1.0)
    wait_until(drained, timeout=CATCH_UP_SECONDS)
    time.sleep(3 * subscription.local_visibility_timeout_seconds)  # a failure would be back
    assert drained()
    waiting = sqs.get_queue_attributes(
        QueueUrl=dead["QueueUrl"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert waiting == "0"
    assert points(gateway, name) == 2 * POINTS
    assert account["username"] == name


def test_the_event_lag_measured_is_the_real_one(system: LocalSystem, gateway, member, unique):
    """The consumers' EventLag runs from the change's stream time. DynamoDB Local rounds that
    down to the minute, which made a fresh event look up to a minute old; the worker bounds it
    by when it read the record, so a product's ProductAdded lags by well under five seconds."""
    from tests.support.prometheus import scrape, value

    labels = {"service": "user_api", "stage": system.stage, "type": "ProductAdded"}
    name = "shop_event_lag_milliseconds"

    def counts() -> tuple[float, float]:
        samples = scrape(system.ports.metrics)
        within = value(samples, f"{name}_bucket", **labels, le="5000.0")
        return value(samples, f"{name}_count", **labels), within

    before_count, before_within = counts()
    user, token = member
    assert add(gateway, token, unique("lag")).status == 201
    wait_for_points(gateway, user, POINTS)
    wait_until(lambda: counts()[0] > before_count, timeout=CATCH_UP_SECONDS)
    after_count, after_within = counts()
    assert after_count - before_count == 1
    assert after_within - before_within == 1
