"""What the in-memory broker still holds when ``make run`` stops, kept on disk and sent again at
the next start.

moto keeps its queues in memory, and the stream positions now survive a restart (the relays
resume instead of publishing the retained stream again). An event that a relay had put on the bus
but no consumer had deleted yet would then be lost with the broker. So a graceful stop, after the
apps are down and the consumers had a bounded time to drain their queues, takes every message
left in every queue of the topology (consumer queues, their dead-letter queues, the relays'
failure queues) and writes them to ``held-messages.json``; the next start sends them back to the
same queues before any worker polls, and deletes the file.

Why this rather than holding back the positions until the consumers had applied an event: a
relay's checkpoint is Lambda's, per shard and per batch, and knows nothing of the consumers;
tying the two would make the local runtime behave unlike the deployed one. Taking the broker's
contents is what a persistent broker (SQS on AWS) gives for free, done once at the stop.

What a resent message loses: its receive count (a message that failed twice starts again at
zero tries), its ``SentTimestamp`` and its message id. The consumers apply an event once by its
event id, so a message that was both applied and kept is applied once all the same.

The file's presence is also the runner's proof that the last run stopped gracefully: without it,
positions on disk cannot be trusted (the broker may have lost what it held), and the runner reads
the streams again from their trim horizon (``tools.localrun``).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tools import topology
from tools.local.events.broker import MISSING_QUEUE_CODES, error_code

HELD_FILE = "held-messages.json"
FORMAT_VERSION = 1
# A message kept is received with this visibility timeout, so it is not handed out twice
# while the rest of its queue is read; the broker is stopped right after.
HOLD_VISIBILITY_SECONDS = 300
SQS_MAX_MESSAGES = 10
POLL_SECONDS = 0.2


def queue_names(stage: str) -> list[str]:
    """Every queue of the topology: consumer queues first, then their dead-letter queues (a
    receive past ``maxReceiveCount`` moves a message there), then the relays' failure queues."""
    subs = topology.SUBSCRIPTIONS
    return [
        *(sub.queue_name(stage) for sub in subs),
        *(sub.dead_letter_queue_name(stage) for sub in subs),
        *(relay.failure_queue_name(stage) for relay in topology.RELAYS),
    ]


def _counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


def _url(sqs: Any, name: str) -> str | None:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except Exception as exc:
        if error_code(exc) in MISSING_QUEUE_CODES:
            return None
        raise


def drain(sqs: Any, names: Iterable[str], deadline: float) -> bool:
    """Wait until the queues ``names`` hold nothing, visible or in flight, on two looks in a
    row (a relay's last PutEvents may land between them), or until the monotonic ``deadline``.
    True when they drained: the consumers polling them did the work, nothing needs keeping."""
    urls = [url for url in (_url(sqs, name) for name in names) if url is not None]
    empty_looks = 0
    while True:
        if all(_counts(sqs, url) == (0, 0) for url in urls):
            empty_looks += 1
            if empty_looks >= 2:
                return True
        else:
            empty_looks = 0
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


def _storable(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Message attributes as ``SendMessage`` takes them and JSON can hold (binary as base64)."""
    kept: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {"DataType": value.get("DataType", "String")}
        if "StringValue" in value:
            item["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        kept[name] = item
    return kept


def _sendable(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: {**value, "BinaryValue": base64.b64decode(value["BinaryValue"])}
        if "BinaryValue" in value
        else dict(value)
        for name, value in attributes.items()
    }


def _take(sqs: Any, name: str, url: str, deadline: float) -> list[dict[str, Any]]:
    """Every message of one queue. Messages in flight (received by a consumer whose invocation
    failed, or that was stopped mid-batch) come back after the local visibility timeout, a few
    seconds: they are waited for until ``deadline``."""
    taken: list[dict[str, Any]] = []
    while True:
        received = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=SQS_MAX_MESSAGES,
            VisibilityTimeout=HOLD_VISIBILITY_SECONDS,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in received:
            taken.append(
                {
                    "queue": name,
                    "body": message.get("Body", ""),
                    "message_attributes": _storable(message.get("MessageAttributes", {})),
                    "receive_count": int(
                        message.get("Attributes", {}).get("ApproximateReceiveCount", 1)
                    )
                    - 1,  # the receive just made to keep it is not a try
                }
            )
        if received:
            continue
        visible, in_flight = _counts(sqs, url)
        if visible == 0 and in_flight <= len(taken):
            return taken
        if time.monotonic() >= deadline:
            return taken  # what is still in flight is lost with the broker; said by the caller
        time.sleep(POLL_SECONDS)


def save(sqs: Any, stage: str, path: Path, deadline: float) -> tuple[int, int]:
    """Take every message of every queue of the topology and write them to ``path`` (always,
    even when there are none: the file says the stop was graceful). Returns (kept, left), left
    being messages still in flight at ``deadline``; with any left the file says it is not
    ``complete``, and the next start reads the streams again as well (``load``)."""
    messages: list[dict[str, Any]] = []
    left = 0
    for name in queue_names(stage):
        url = _url(sqs, name)
        if url is None:
            continue
        messages += _take(sqs, name, url, deadline)
        left += sum(_counts(sqs, url)) - sum(1 for m in messages if m["queue"] == name)
    document = {
        "version": FORMAT_VERSION,
        "stage": stage,
        "saved_at": time.time(),
        "complete": left <= 0,
        "messages": messages,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)  # whole or not at all: a torn file would lose the messages
    return len(messages), max(left, 0)


def load(path: Path) -> tuple[list[Mapping[str, Any]], bool] | None:
    """The messages kept at the last graceful stop and whether they are all the broker held;
    None when there is no readable file (the last run did not stop gracefully)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        return None
    messages = document.get("messages")
    if not isinstance(messages, list):
        return None
    return messages, document.get("complete") is True


def resend(sqs: Any, messages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Send the kept messages back to their queues (which ``wire`` made again), in the order
    they were taken. Returns how many went to each queue."""
    sent: dict[str, int] = {}
    by_queue: dict[str, list[Mapping[str, Any]]] = {}
    for message in messages:
        by_queue.setdefault(str(message["queue"]), []).append(message)
    for name, queued in by_queue.items():
        url = _url(sqs, name)
        if url is None:
            continue  # a queue the topology no longer has: nothing would read it
        for start in range(0, len(queued), SQS_MAX_MESSAGES):
            chunk = queued[start : start + SQS_MAX_MESSAGES]
            entries = []
            for index, message in enumerate(chunk):
                entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["body"]}
                if message.get("message_attributes"):
                    entry["MessageAttributes"] = _sendable(message["message_attributes"])
                entries.append(entry)
            answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"could not send kept messages back to {name}: {answer}")
        sent[name] = len(queued)
    return sent
