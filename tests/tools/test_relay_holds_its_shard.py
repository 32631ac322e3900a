"""svckit.events.relay under the stream mapping's retry rules, on real endpoints (moto's
EventBridge + SQS, DynamoDB Local's streams): a record the relay cannot map holds its shard until
the relay is fixed, and nothing stored after it is lost (the outbox's promise)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from svckit import events
from tests.support import endpoints
from tools import topology
from tools.local import events as local_events
from tools.local.events import Function, StreamPoller

RELAY = topology.RELAYS[1]  # product_api's relay
SUB = topology.SUBSCRIPTIONS[0]  # user_api's ProductAdded queue


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, message: str, **kw: Any) -> None:
        self.lines.append((level, message, kw))

    def info(self, message: str, **kw: Any) -> None:
        self._add("info", message, **kw)

    def warning(self, message: str, **kw: Any) -> None:
        self._add("warning", message, **kw)

    def error(self, message: str, **kw: Any) -> None:
        self._add("error", message, **kw)


# servers, aws, stage (wired from the topology) and table (with a stream): tests/tools/conftest.py


@pytest.fixture
def stage(stage, servers, monkeypatch):
    """The wired stage, with the relay's EventBridge client pointed at its bus."""
    name = stage
    monkeypatch.setenv(events.BUS_SETTING, topology.bus_name(name))
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", servers[0])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    events.events_client.cache_clear()
    yield name
    events.events_client.cache_clear()


def mapping(poison: set[str]):
    def to_event(change: events.Change):
        key = change.new["k"]
        if key in poison:
            raise KeyError("product_name")  # a row the mapping cannot read
        return events.PRODUCT_ADDED, {"k": key}

    return to_event


def relay_handler(poison: set[str], log: Log):
    def handler(event: dict[str, Any], context: Any) -> Any:
        return events.relay(event["Records"], events.PRODUCT_SOURCE, mapping(poison), log)

    return handler


def poller(aws, stage, table, handler, positions=None):
    """The relay's mapping as the topology defines it (no retry limit but the record's age)."""
    return StreamPoller(
        RELAY,
        Function(f"product-api-{stage}-{RELAY.handler}", handler),
        table=table,
        stage=stage,
        streams=aws["streams"],
        dynamodb_client=aws["dynamodb"],
        sqs=aws["sqs"],
        say=lambda s: None,
        retry_delays=(0.01,),
        positions=positions,
    )


def count(aws, name):
    url = aws["sqs"].get_queue_url(QueueName=name)["QueueUrl"]
    a = aws["sqs"].get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(a["Attributes"]["ApproximateNumberOfMessages"])


def delivered(aws, stage) -> list[str]:
    url = aws["sqs"].get_queue_url(QueueName=SUB.queue_name(stage))["QueueUrl"]
    keys = []
    while True:
        got = aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if not got.get("Messages"):
            return sorted(keys)
        for m in got["Messages"]:
            keys.append(json.loads(m["Body"])["detail"]["data"]["k"])
            aws["sqs"].delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_an_unmappable_record_holds_the_shard_and_nothing_after_it_is_lost(
    aws, stage, table, tmp_path
):
    """b cannot be mapped (a relay bug): a goes out, b is retried far beyond any retry limit,
    c and d wait behind it and nothing goes to the failure queue. Once the relay is fixed (a
    reload: a new worker on the same positions), b, c and d are published."""
    positions = local_events.Positions(tmp_path / "positions.json")
    broken = poller(aws, stage, table, relay_handler({"b"}, Log()), positions)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b", "c", "d")
    for _ in range(60):
        broken.poll_once()
    assert delivered(aws, stage) == ["a"]
    assert count(aws, RELAY.failure_queue_name(stage)) == 0
    fixed = poller(aws, stage, table, relay_handler(set(), Log()), positions)
    for _ in range(30):
        fixed.poll_once()
    assert delivered(aws, stage) == ["b", "c", "d"]
    assert count(aws, RELAY.failure_queue_name(stage)) == 0
