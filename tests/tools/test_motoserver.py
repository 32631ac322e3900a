"""The local DynamoDB endpoint keeps DynamoDB's promise: a conditional write is atomic; and the
local SQS hands out messages at a cost that does not grow with the queue.

Stock moto checks a condition and then writes, unlocked, while its server answers on threads.
With a tiny GIL switch interval, 16 threads racing ``attribute_not_exists`` on one key let
several through in most rounds (185 of 200 when this was written); real DynamoDB lets exactly
one through, and the registration race test depends on that.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.sqs.models import SQSBackend, sqs_backends

from tools import motoserver

RACERS = 16
ROUNDS = 100


@pytest.fixture
def atomic_writes() -> Iterator[None]:
    originals = {name: getattr(DynamoDBBackend, name) for name in motoserver.WRITE_METHODS}
    motoserver.make_writes_atomic()
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(DynamoDBBackend, name, method)


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _race_once(backend: DynamoDBBackend, key: str) -> int:
    """Start ``RACERS`` conditional puts on ``key`` at once; return how many succeeded."""
    winners: list[int] = []
    start = threading.Barrier(RACERS)

    def race(racer: int) -> None:
        start.wait(timeout=10)
        try:
            backend.put_item(
                "race",
                {"k": {"S": key}, "racer": {"N": str(racer)}},
                condition_expression="attribute_not_exists(k)",
            )
        except Exception:  # moto's ConditionalCheckFailed: this racer lost
            return
        winners.append(racer)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return len(winners)


def test_racing_conditional_puts_have_exactly_one_winner(atomic_writes, eager_thread_switching):
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="race",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        winners_per_round = [_race_once(backend, f"round-{n}") for n in range(ROUNDS)]
    assert winners_per_round == [1] * ROUNDS


@pytest.fixture
def fast_receives() -> Iterator[list[str]]:
    """The patch applied, and every computation of a queue's attributes recorded."""
    original_check = SQSBackend.is_message_valid_based_on_retention_period
    original_attributes = SQSBackend.get_queue_attributes
    computed: list[str] = []

    def counted(self: SQSBackend, queue_name: str, *args: object, **kwargs: object) -> object:
        computed.append(queue_name)
        return original_attributes(self, queue_name, *args, **kwargs)

    motoserver.make_receives_fast()
    SQSBackend.get_queue_attributes = counted  # type: ignore[method-assign]
    try:
        yield computed
    finally:
        SQSBackend.is_message_valid_based_on_retention_period = original_check
        SQSBackend.get_queue_attributes = original_attributes


def test_a_receive_does_not_compute_the_queues_attributes_per_message(fast_receives):
    """Stock moto computes every attribute (counting every queued message) once per message it
    hands out: ten per receive here, whatever the queue holds."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="busy")["QueueUrl"]
        for batch in range(20):
            entries = [{"Id": str(n), "MessageBody": f"{batch}-{n}"} for n in range(10)]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        fast_receives.clear()

        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]

    assert len(got) == 10
    assert fast_receives == []


@pytest.mark.parametrize(("age_seconds", "handed_out"), [(61, []), (59, ["message"])])
def test_the_retention_period_still_holds(fast_receives, age_seconds, handed_out):
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        attributes = {"MessageRetentionPeriod": "60"}
        url = sqs.create_queue(QueueName="aged", Attributes=attributes)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="message")
        queue = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_queue("aged")
        queue._messages[0].sent_timestamp -= age_seconds * 1000

        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])

    assert [m["Body"] for m in got] == handed_out
