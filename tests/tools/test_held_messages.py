"""``tools.local.events.held``: what moto's queues hold at a graceful stop, written to a file and
sent back to a newly wired broker, on a real moto server (``tests/tools/conftest.py``)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from tools import topology
from tools.local import events as local_events
from tools.local.events import held

SUBSCRIPTION = topology.SUBSCRIPTIONS[0]


def _url(aws: dict[str, Any], name: str) -> str:
    return str(aws["sqs"].get_queue_url(QueueName=name)["QueueUrl"])


def _bodies(aws: dict[str, Any], name: str) -> list[str]:
    received = aws["sqs"].receive_message(
        QueueUrl=_url(aws, name), MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    return sorted(m["Body"] for m in received.get("Messages", []))


def test_every_queue_is_kept_and_sent_back_to_a_new_stage(
    aws: dict[str, Any], stage: str, tmp_path: Path
) -> None:
    queue, dlq = SUBSCRIPTION.queue_name(stage), SUBSCRIPTION.dead_letter_queue_name(stage)
    for body in ("one", "two"):
        aws["sqs"].send_message(
            QueueUrl=_url(aws, queue),
            MessageBody=body,
            MessageAttributes={"kind": {"DataType": "String", "StringValue": body}},
        )
    aws["sqs"].send_message(QueueUrl=_url(aws, dlq), MessageBody="dead")
    path = tmp_path / held.HELD_FILE

    kept, left = held.save(aws["sqs"], stage, path, time.monotonic() + 5)

    assert (kept, left) == (3, 0)
    loaded = held.load(path)
    assert loaded is not None
    messages, complete = loaded
    assert complete
    assert {(m["queue"], m["body"]) for m in messages} == {
        (queue, "one"),
        (queue, "two"),
        (dlq, "dead"),
    }
    # What a restarted broker is: the same names, wired again, empty. (A new stage stands in
    # for it: the file names its queues, so they are renamed to the new stage's.)
    again = f"t{uuid.uuid4().hex[:8]}"
    local_events.wire(aws["sqs"], aws["events"], again)
    for message in messages:
        message["queue"] = str(message["queue"]).replace(stage, again)  # type: ignore[index]
    sent = held.resend(aws["sqs"], messages)
    assert sent == {
        SUBSCRIPTION.queue_name(again): 2,
        SUBSCRIPTION.dead_letter_queue_name(again): 1,
    }
    assert _bodies(aws, SUBSCRIPTION.queue_name(again)) == ["one", "two"]
    assert _bodies(aws, SUBSCRIPTION.dead_letter_queue_name(again)) == ["dead"]


def test_a_message_in_flight_is_waited_for_and_kept(
    aws: dict[str, Any], stage: str, tmp_path: Path
) -> None:
    """A consumer that failed a message leaves it invisible for the local visibility timeout
    (2 s): the stop waits for it rather than losing it."""
    queue = SUBSCRIPTION.queue_name(stage)
    aws["sqs"].send_message(QueueUrl=_url(aws, queue), MessageBody="failed once")
    taken = aws["sqs"].receive_message(QueueUrl=_url(aws, queue), VisibilityTimeout=1)
    assert len(taken["Messages"]) == 1

    kept, left = held.save(aws["sqs"], stage, tmp_path / held.HELD_FILE, time.monotonic() + 5)

    assert (kept, left) == (1, 0)
    document = json.loads((tmp_path / held.HELD_FILE).read_text())
    assert [m["body"] for m in document["messages"]] == ["failed once"]
    assert document["messages"][0]["receive_count"] == 1


def test_no_file_or_a_torn_one_means_the_last_stop_was_not_graceful(tmp_path: Path) -> None:
    assert held.load(tmp_path / "absent.json") is None
    torn = tmp_path / held.HELD_FILE
    torn.write_text('{"version": 1, "messages": [')
    assert held.load(torn) is None
