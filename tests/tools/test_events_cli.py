"""``python -m tools.events dlq list|replay`` against a real moto server wired as ``make run``
wires it (the local stage's names, found through ``EVENTS_PORT``), with dead letters made the
way they are made at run time: a message received ``maxReceiveCount`` times and moved by SQS's
redrive, and a relay's on-failure record.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import endpoints
from tools import events as cli
from tools import topology
from tools.local import events as local_events
from tools.local.process import free_port

STAGE = "local"
SUBSCRIPTION = topology.SUBSCRIPTIONS[0]
RELAY = topology.RELAYS[0]


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A fresh moto server per test, wired for the local stage, found by the CLI's defaults."""
    with endpoints.events_server() as url:
        monkeypatch.setenv(local_events.PORT_ENV, str(urlsplit(url).port))
        sqs = local_events.client("sqs", url)
        local_events.wire(sqs, local_events.client("events", url), STAGE)
        yield {"sqs": sqs}


def _url(sqs: Any, name: str) -> str:
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


def _product_added(event_id: str) -> str:
    """A ProductAdded event as the subscription's rule delivers it to the queue (a new
    EventBridge id each time, the envelope's id ``event_id``)."""
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "detail-type": "ProductAdded",
            "source": SUBSCRIPTION.source,
            "detail": {
                "id": event_id,
                "type": "ProductAdded",
                "version": 1,
                "source": SUBSCRIPTION.source,
                "time": "2026-01-01T00:00:00.000Z",
                "data": {"created_by": "secret-looking-name"},
            },
        }
    )


def _dead_letter(sqs: Any, event_id: str) -> str:
    """An event its consumer failed ``maxReceiveCount`` times, moved to the DLQ by SQS."""
    body = _product_added(event_id)
    queue = _url(sqs, SUBSCRIPTION.queue_name(STAGE))
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    for _ in range(SUBSCRIPTION.max_receive_count):
        got = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0, WaitTimeSeconds=1)
        assert got.get("Messages"), "the message should still be in its queue"
    # The next receive finds it over the limit: SQS moves it instead of delivering it.
    assert not sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0).get("Messages")
    return body


def _undelivered(sqs: Any, event_id: str) -> str:
    """An event EventBridge could not deliver to the consumer's queue, dead-lettered by the
    rule's target as EventBridge does it: the event as the rule would have delivered it, with
    EventBridge's attributes describing the failure (and one attribute of some other origin)."""
    body = _product_added(event_id)
    failure = {
        "ERROR_CODE": "SQS_PERMISSION_DENIED",
        "ERROR_MESSAGE": "Access to the resource is denied.",
        "RETRY_ATTEMPTS": "0",
        "RULE_ARN": "arn:aws:events:us-east-1:000000000000:rule/shop-local/rule",
        "TARGET_ARN": "arn:aws:sqs:us-east-1:000000000000:queue",
        "kept": "yes",
    }
    sqs.send_message(
        QueueUrl=_url(sqs, SUBSCRIPTION.dead_letter_queue_name(STAGE)),
        MessageBody=body,
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value}
            for name, value in failure.items()
        },
    )
    return body


def _relay_failure(sqs: Any) -> dict[str, Any]:
    records = [
        {"dynamodb": {"SequenceNumber": "100", "ApproximateCreationDateTime": 1.7e9}},
        {"dynamodb": {"SequenceNumber": "300", "ApproximateCreationDateTime": 1.7e9}},
    ]
    record = local_events.stream_failure_record(
        local_events.Function("user-api-local-relay_user_changes", lambda e, c: None),
        condition="RetryAttemptsExhausted",
        invocations=6,
        function_error=False,
        shard_id="shardId-0001",
        stream_arn="arn:aws:dynamodb:us-east-1:000000000000:table/users-local/stream/x",
        records=records,
    )
    sqs.send_message(
        QueueUrl=_url(sqs, RELAY.failure_queue_name(STAGE)), MessageBody=json.dumps(record)
    )
    return record


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def _visible(sqs: Any, name: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=_url(sqs, name), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_list_names_every_dead_letter_queue_and_what_each_message_is(moto):
    sqs = moto["sqs"]
    _dead_letter(sqs, "event-1")
    _relay_failure(sqs)

    code, out = _run("dlq", "list")

    assert code == 0, out
    for sub in topology.SUBSCRIPTIONS:
        assert sub.dead_letter_queue_name(STAGE) in out
    for relay in topology.RELAYS:
        assert relay.failure_queue_name(STAGE) in out
    consumer = next(
        line for line in out.splitlines() if SUBSCRIPTION.dead_letter_queue_name(STAGE) in line
    )
    assert "1 message(s)" in consumer
    line = next(line for line in out.splitlines() if "event event-1" in line)
    assert "ProductAdded" in line
    assert f"receives {SUBSCRIPTION.max_receive_count}" in line
    assert "first failure 20" in line
    relay = next(line for line in out.splitlines() if "shard shardId-0001" in line)
    assert "sequence numbers 100..300 (2 records)" in relay
    assert "RetryAttemptsExhausted" in relay
    assert "secret-looking-name" not in out  # envelope fields only, never the data
    # Listing keeps them: they are all still there, visible, for the next list or a replay.
    assert _visible(sqs, SUBSCRIPTION.dead_letter_queue_name(STAGE)) == 1
    assert _visible(sqs, RELAY.failure_queue_name(STAGE)) == 1
    assert _run("dlq", "list")[1].count("event event-1") == 1


def test_replay_sends_consumer_dead_letters_back_unchanged_and_leaves_relay_failures(moto):
    sqs = moto["sqs"]
    body = _dead_letter(sqs, "event-2")
    _relay_failure(sqs)

    code, out = _run("dlq", "replay")

    assert code == 0, out
    assert "replayed 1 message(s)" in out
    assert _visible(sqs, SUBSCRIPTION.dead_letter_queue_name(STAGE)) == 0
    back = sqs.receive_message(QueueUrl=_url(sqs, SUBSCRIPTION.queue_name(STAGE)))["Messages"]
    assert [m["Body"] for m in back] == [body]  # same body, so the same event id
    assert _visible(sqs, RELAY.failure_queue_name(STAGE)) == 1
    assert "nothing to send again" in out
    assert "nothing to send again" in out
    assert "24 h" in out


def test_replay_of_one_queue_moves_at_most_max(moto):
    sqs = moto["sqs"]
    for n in range(3):
        _dead_letter(sqs, f"event-{n}")

    code, out = _run(
        "dlq", "replay", "--queue", SUBSCRIPTION.dead_letter_queue_name(STAGE), "--max", "2"
    )

    assert code == 0, out
    assert "replayed 2 message(s)" in out
    assert _visible(sqs, SUBSCRIPTION.dead_letter_queue_name(STAGE)) == 1
    assert _visible(sqs, SUBSCRIPTION.queue_name(STAGE)) == 2


def test_replay_of_a_relay_failure_queue_explains_instead(moto):
    _relay_failure(moto["sqs"])

    code, out = _run("dlq", "replay", "--queue", RELAY.failure_queue_name(STAGE))

    assert code == 0, out
    assert "replayed 0 message(s)" in out
    assert "Reconcile by hand" in out
    assert _visible(moto["sqs"], RELAY.failure_queue_name(STAGE)) == 1


def test_an_unknown_queue_is_refused(moto):
    code, out = _run("dlq", "replay", "--queue", "nope")

    assert code == 1
    assert "nope is no dead-letter queue of local" in out


def test_without_make_run_it_says_so(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(local_events.PORT_ENV, str(free_port()))

    code, out = _run("dlq", "list")

    assert code == 1
    assert "Is make run running?" in out


def test_list_says_which_dead_letters_eventbridge_could_not_deliver(moto):
    sqs = moto["sqs"]
    _dead_letter(sqs, "event-applied-too-often")
    _undelivered(sqs, "event-never-delivered")

    code, out = _run("dlq", "list")

    assert code == 0, out
    consumer = next(
        line for line in out.splitlines() if SUBSCRIPTION.dead_letter_queue_name(STAGE) in line
    )
    assert "2 message(s)" in consumer
    undelivered = next(line for line in out.splitlines() if "event-never-delivered" in line)
    assert "ProductAdded" in undelivered
    assert "not delivered by EventBridge: SQS_PERMISSION_DENIED, 0 retries" in undelivered
    assert "dead-lettered 20" in undelivered
    assert "Access to the resource is denied." in undelivered
    assert "receives" not in undelivered  # only this listing ever received it
    failed = next(line for line in out.splitlines() if "event-applied-too-often" in line)
    assert f"receives {SUBSCRIPTION.max_receive_count}" in failed
    assert "EventBridge" not in failed
    assert "secret-looking-name" not in out


def test_replay_sends_an_undelivered_event_to_the_queue_without_eventbridge_attributes(moto):
    sqs = moto["sqs"]
    body = _undelivered(sqs, "event-3")

    code, out = _run("dlq", "replay")

    assert code == 0, out
    assert "replayed 1 message(s)" in out
    assert _visible(sqs, SUBSCRIPTION.dead_letter_queue_name(STAGE)) == 0
    (back,) = sqs.receive_message(
        QueueUrl=_url(sqs, SUBSCRIPTION.queue_name(STAGE)), MessageAttributeNames=["All"]
    )["Messages"]
    assert back["Body"] == body  # the event, as the rule would have delivered it
    # What described the failed delivery stays behind; a later dead letter of the consumer's
    # own is then not taken for EventBridge's.
    assert set(back.get("MessageAttributes", {})) == {"kept"}
