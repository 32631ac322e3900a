"""The pollers that stand in for Lambda's event source mappings, against real endpoints: moto's
server for EventBridge and SQS (wired by ``tools.local.events.wire`` from the topology) and the
DynamoDB engine ``make run`` uses, each a child process.

The handlers here are plain functions that record what they were given and answer as the test
needs, so each Lambda rule is checked on its own: which messages are deleted, what a raised
exception does, SQS's redrive to the dead-letter queue after ``maxReceiveCount``, a stream batch
read again from the failed record, and the failure queue once the retries are used up. Each test
wires its own stage (unique queue names) and makes its own table.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import endpoints
from tests.support.system import wait_until
from tools import topology
from tools.local import events as local_events
from tools.local.events import Function, QueuePoller, StreamPoller

SUBSCRIPTION = topology.SUBSCRIPTIONS[0]
RELAY = topology.RELAYS[0]


# servers, aws, stage (wired from the topology) and table (with a stream): tests/tools/conftest.py


@pytest.fixture
def said() -> list[str]:
    return []


def _url(aws: dict[str, Any], name: str) -> str:
    return str(aws["sqs"].get_queue_url(QueueName=name)["QueueUrl"])


def _counts(aws: dict[str, Any], name: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = aws["sqs"].get_queue_attributes(
        QueueUrl=_url(aws, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def _publish(aws: dict[str, Any], stage: str, *ids: str) -> None:
    """Events on the stage's bus, as a relay puts them, each routed by the rule to the queue."""
    entries = [
        {
            "Source": SUBSCRIPTION.source,
            "DetailType": SUBSCRIPTION.types[0],
            "Detail": json.dumps({"id": event_id}),
            "EventBusName": topology.bus_name(stage),
        }
        for event_id in ids
    ]
    answer = aws["events"].put_events(Entries=entries)
    assert answer["FailedEntryCount"] == 0, answer


def _event_id(record: dict[str, Any]) -> str:
    return str(json.loads(record["body"])["detail"]["id"])


class Recorder:
    """A handler: records each event, answers with what ``answer(records)`` returns."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.answer = answer
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        return self.answer(event["Records"])

    def ids(self) -> list[list[str]]:
        return [[_event_id(r) for r in event["Records"]] for event in self.events]


def _queue_poller(
    handler: Recorder, aws: dict[str, Any], stage: str, said: list[str]
) -> QueuePoller:
    return QueuePoller(
        SUBSCRIPTION,
        Function(f"user-api-{stage}-{SUBSCRIPTION.handler}", handler),
        stage=stage,
        sqs=aws["sqs"],
        say=said.append,
    )


def _poll_until(poller: Any, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        poller.poll_once()


# -- SQS --


def test_only_the_messages_not_reported_failed_are_deleted(aws, stage, said):
    def fail_bad(records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in records if _event_id(r) == "bad"
            ]
        }

    handler = Recorder(fail_bad)
    poller = _queue_poller(handler, aws, stage, said)
    _publish(aws, stage, "good-1", "bad", "good-2")

    _poll_until(poller, lambda: sum(len(ids) for ids in handler.ids()) >= 3)

    assert sorted(i for ids in handler.ids() for i in ids) == ["bad", "good-1", "good-2"]
    # The two good ones are gone; the bad one is in flight until its visibility timeout.
    assert _counts(aws, SUBSCRIPTION.queue_name(stage)) == (0, 1)
    record = handler.events[0]["Records"][0]
    queue_arn = local_events.queue_arn(aws["sqs"], _url(aws, SUBSCRIPTION.queue_name(stage)))
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue_arn
    assert record["awsRegion"] == local_events.REGION
    assert record["md5OfBody"]
    assert record["receiptHandle"]
    assert record["messageAttributes"] == {}
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId"} <= set(record["attributes"])
    assert json.loads(record["body"])["detail-type"] == SUBSCRIPTION.types[0]
    assert handler.contexts[0].function_name.endswith(SUBSCRIPTION.handler)
    assert handler.contexts[0].get_remaining_time_in_millis() > 0


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("raise", id="exception"),
        pytest.param({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, id="unknown-id"),
        pytest.param({"batchItemFailures": [{"itemIdentifier": ""}]}, id="empty-id"),
        pytest.param({"batchItemFailures": "all"}, id="not-a-list"),
        pytest.param("not an object", id="not-an-object"),
    ],
)
def test_an_exception_or_a_malformed_answer_deletes_nothing(aws, stage, said, answer):
    def respond(records: list[dict[str, Any]]) -> Any:
        if answer == "raise":
            raise RuntimeError("handler bug")
        return answer

    handler = Recorder(respond)
    poller = _queue_poller(handler, aws, stage, said)
    _publish(aws, stage, "one", "two")

    _poll_until(poller, lambda: sum(len(ids) for ids in handler.ids()) >= 2)

    assert _counts(aws, SUBSCRIPTION.queue_name(stage)) == (0, 2)
    assert any("no message of the batch is deleted" in s or "nothing is deleted" in s for s in said)


def test_an_empty_answer_deletes_the_whole_batch(aws, stage, said):
    handler = Recorder(lambda records: None)
    poller = _queue_poller(handler, aws, stage, said)
    _publish(aws, stage, "one", "two")

    _poll_until(poller, lambda: sum(len(ids) for ids in handler.ids()) >= 2)

    assert _counts(aws, SUBSCRIPTION.queue_name(stage)) == (0, 0)


def test_a_message_failing_max_receive_count_times_lands_in_the_dead_letter_queue(aws, stage, said):
    handler = Recorder(
        lambda records: {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}
    )
    poller = _queue_poller(handler, aws, stage, said)
    _publish(aws, stage, "poison")
    stop = threading.Event()
    thread = poller.start(stop)
    try:
        # Each failure comes back after the wired local visibility timeout (2 s).
        wait_until(
            lambda: _counts(aws, SUBSCRIPTION.dead_letter_queue_name(stage))[0] == 1 or None,
            timeout=SUBSCRIPTION.max_receive_count * 4 + 10,
        )
    finally:
        stop.set()
        thread.join(timeout=5)

    counts = [int(e["Records"][0]["attributes"]["ApproximateReceiveCount"]) for e in handler.events]
    assert counts == list(range(1, SUBSCRIPTION.max_receive_count + 1))
    assert _counts(aws, SUBSCRIPTION.queue_name(stage)) == (0, 0)
    dead = aws["sqs"].receive_message(
        QueueUrl=_url(aws, SUBSCRIPTION.dead_letter_queue_name(stage)), MaxNumberOfMessages=10
    )["Messages"]
    assert [json.loads(m["Body"])["detail"]["id"] for m in dead] == ["poison"]
    assert dead[0]["Body"] == handler.events[0]["Records"][0]["body"]


def test_a_missing_queue_is_reported_and_retried_not_fatal(aws, said):
    stage = f"t{uuid.uuid4().hex[:8]}"  # never wired: the queue does not exist yet
    handler = Recorder(lambda records: None)
    poller = _queue_poller(handler, aws, stage, said)
    stop = threading.Event()
    thread = poller.start(stop)
    try:
        wait_until(lambda: any("polling failed" in s for s in said) or None, timeout=10)
        local_events.wire(aws["sqs"], aws["events"], stage)
        _publish(aws, stage, "late")
        wait_until(lambda: handler.ids() == [["late"]] or None, timeout=15)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert thread.is_alive() is False
    assert any("working again" in s for s in said), said


# -- DynamoDB streams --


def _keys(event: dict[str, Any]) -> list[str]:
    return [r["dynamodb"]["Keys"]["k"]["S"] for r in event["Records"]]


def _stream_poller(
    handler: Recorder, aws: dict[str, Any], stage: str, table: str, said: list[str], **relay: Any
) -> StreamPoller:
    return StreamPoller(
        dataclasses.replace(RELAY, **relay),
        Function(f"user-api-{stage}-{RELAY.handler}", handler),
        table=table,
        stage=stage,
        streams=aws["streams"],
        dynamodb_client=aws["dynamodb"],
        sqs=aws["sqs"],
        say=said.append,
        retry_delays=(0.01,),
    )


def _seen(handler: Recorder) -> list[list[str]]:
    return [_keys(event) for event in handler.events]


def test_a_stream_batch_reaches_the_relay_as_lambda_shapes_it(aws, stage, table, said):
    handler = Recorder(lambda records: {"batchItemFailures": []})
    poller = _stream_poller(handler, aws, stage, table, said)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b")

    _poll_until(poller, lambda: sum(len(k) for k in _seen(handler)) >= 2)

    assert [k for keys in _seen(handler) for k in keys] == ["a", "b"]
    record = handler.events[0]["Records"][0]
    stream_arn = aws["dynamodb"].describe_table(TableName=table)["Table"]["LatestStreamArn"]
    assert record["eventSourceARN"] == stream_arn
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventName"] == "INSERT"
    assert {"eventID", "eventVersion", "awsRegion"} <= set(record)
    images = record["dynamodb"]
    assert images["NewImage"]["blob"] == {"B": "YQ=="}  # base64 text, as on the wire
    assert images["NewImage"]["n"] == {"N": "1"}
    assert isinstance(images["ApproximateCreationDateTime"], int | float)
    assert images["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert {"Keys", "SequenceNumber", "SizeBytes"} <= set(images)
    json.dumps(handler.events[0])  # nothing but JSON values, as Lambda delivers


def test_a_failed_stream_record_is_read_again_from_its_sequence_number(aws, stage, table, said):
    calls: list[int] = []

    def fail_b_once(records: list[dict[str, Any]]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            failed = next(r for r in records if r["dynamodb"]["Keys"]["k"]["S"] == "b")
            return {"batchItemFailures": [{"itemIdentifier": failed["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    handler = Recorder(fail_b_once)
    poller = _stream_poller(handler, aws, stage, table, said)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b", "c")
    _poll_until(poller, lambda: sum(len(k) for k in _seen(handler)) >= 3)

    _poll_until(poller, lambda: len(handler.events) >= 2)

    assert _seen(handler) == [["a", "b", "c"], ["b", "c"]]
    # And the shard moved on: a later change arrives alone.
    endpoints.put_keys(aws["dynamodb"], table, "d")
    _poll_until(poller, lambda: len(handler.events) >= 3)
    assert _seen(handler)[2] == ["d"]


def test_after_its_retries_a_failing_batch_goes_to_the_failure_queue(aws, stage, table, said):
    def fail_from_b(records: list[dict[str, Any]]) -> dict[str, Any]:
        for record in records:
            if record["dynamodb"]["Keys"]["k"]["S"] == "b":
                return {
                    "batchItemFailures": [{"itemIdentifier": record["dynamodb"]["SequenceNumber"]}]
                }
        return {}

    handler = Recorder(fail_from_b)
    poller = _stream_poller(handler, aws, stage, table, said, maximum_retry_attempts=2)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b", "c")
    failures = RELAY.failure_queue_name(stage)

    _poll_until(poller, lambda: _counts(aws, failures)[0] == 1)

    # One invocation with everything, then the first try and two retries from b.
    assert _seen(handler) == [["a", "b", "c"], ["b", "c"], ["b", "c"]]
    message = aws["sqs"].receive_message(QueueUrl=_url(aws, failures))["Messages"][0]
    record = json.loads(message["Body"])
    first = handler.events[1]["Records"]
    info = record["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == first[0]["dynamodb"]["SequenceNumber"]
    assert info["endSequenceNumber"] == first[-1]["dynamodb"]["SequenceNumber"]
    assert info["batchSize"] == 2
    assert info["streamArn"] == first[0]["eventSourceARN"]
    assert info["shardId"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert "NewImage" not in message["Body"]  # the range only, never the records
    # The shard moved past the batch.
    endpoints.put_keys(aws["dynamodb"], table, "d")
    _poll_until(poller, lambda: len(handler.events) >= 4)
    assert _seen(handler)[3] == ["d"]


def test_the_topologys_relay_holds_its_shard_until_the_batch_goes_through(aws, stage, table, said):
    """The relays' setting (-1, no retry limit but the record's age): a batch failing from b
    for many more tries than any limit is never given up; once the cause is fixed, b and c
    go through and nothing reaches the failure queue."""
    fixed = threading.Event()

    def fail_from_b_until_fixed(records: list[dict[str, Any]]) -> dict[str, Any]:
        if len(handler.events) >= 12:
            fixed.set()
        for record in records:
            if record["dynamodb"]["Keys"]["k"]["S"] == "b" and not fixed.is_set():
                return {
                    "batchItemFailures": [{"itemIdentifier": record["dynamodb"]["SequenceNumber"]}]
                }
        return {}

    handler = Recorder(fail_from_b_until_fixed)
    assert RELAY.maximum_retry_attempts == -1
    poller = _stream_poller(handler, aws, stage, table, said)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b", "c")

    _poll_until(poller, lambda: fixed.is_set() and _seen(handler)[-1] == ["b", "c"])

    assert len(handler.events) >= 12
    assert _seen(handler)[1:] == [["b", "c"]] * (len(handler.events) - 1)
    assert _counts(aws, RELAY.failure_queue_name(stage))[0] == 0


def test_an_exception_fails_the_whole_batch_and_the_retry_is_halved(aws, stage, table, said):
    def crash_once(records: list[dict[str, Any]]) -> dict[str, Any]:
        if len(handler.events) == 1:
            raise RuntimeError("relay bug")
        return {}

    handler = Recorder(crash_once)
    poller = _stream_poller(handler, aws, stage, table, said)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b", "c", "d")
    _poll_until(poller, lambda: sum(len(k) for k in _seen(handler)) >= 4)

    _poll_until(poller, lambda: sum(len(k) for k in _seen(handler)[1:]) >= 4)

    # BisectBatchOnFunctionError: the first retry holds half the batch; then the rest.
    assert _seen(handler) == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"]]
    assert any("the handler raised" in s for s in said)
    assert any("RuntimeError: relay bug" in s for s in said)


def test_a_table_made_again_is_read_from_its_new_stream(aws, stage, table, said):
    handler = Recorder(lambda records: {})
    poller = _stream_poller(handler, aws, stage, table, said)
    endpoints.put_keys(aws["dynamodb"], table, "before")
    _poll_until(poller, lambda: _seen(handler) == [["before"]])

    aws["dynamodb"].delete_table(TableName=table)
    aws["dynamodb"].get_waiter("table_not_exists").wait(TableName=table)
    endpoints.create_stream_table(aws["dynamodb"], table)
    endpoints.put_keys(aws["dynamodb"], table, "after")
    stop = threading.Event()
    thread = poller.start(stop)
    try:
        wait_until(lambda: ["after"] in _seen(handler) or None, timeout=15)
    finally:
        stop.set()
        thread.join(timeout=5)


def test_a_poller_with_the_positions_of_an_earlier_one_goes_on_from_there(
    aws, stage, table, said, tmp_path
):
    positions = tmp_path / "positions.json"
    first = Recorder(lambda records: {})
    poller = _stream_poller(first, aws, stage, table, said)
    poller.positions = local_events.Positions(positions)
    endpoints.put_keys(aws["dynamodb"], table, "a", "b")
    _poll_until(poller, lambda: sum(len(k) for k in _seen(first)) >= 2)

    endpoints.put_keys(aws["dynamodb"], table, "c")
    again = Recorder(lambda records: {})
    restarted = _stream_poller(again, aws, stage, table, said)
    restarted.positions = local_events.Positions(positions)
    _poll_until(restarted, lambda: _seen(again) != [])
    fresh = Recorder(lambda records: {})
    without = _stream_poller(fresh, aws, stage, table, said)
    _poll_until(without, lambda: sum(len(k) for k in _seen(fresh)) >= 3)

    assert _seen(again) == [["c"]]  # from its position on
    assert [k for keys in _seen(fresh) for k in keys] == ["a", "b", "c"]  # from the start
