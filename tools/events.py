"""The operator's view of dead letters: what failed, and sending consumer failures back.

``python -m tools.events dlq list [--stage STAGE] [--localstack]`` (``make dlq``)
``python -m tools.events dlq replay [--queue NAME] [--max N] [--stage STAGE]`` (``make dlq-replay``)

Which queues: every dead-letter queue of ``tools.topology`` for the stage, never a name typed
by hand. Two kinds hold failures:

* a **consumer's dead-letter queue** holds the EventBridge events its consumer failed to apply
  ``maxReceiveCount`` times, and those EventBridge could not deliver to the consumer's queue at
  all (the rule's target dead-letters there: the same body, with EventBridge's ``ERROR_CODE``,
  ``ERROR_MESSAGE``, ``RETRY_ATTEMPTS``... message attributes, which ``list`` shows). ``replay``
  sends each back to the consumer's own queue, body unchanged (so its event id is the same, and
  an event that was applied after all changes nothing) and without EventBridge's attributes
  (they describe the failed delivery, not the event), then deletes it from the dead-letter
  queue. Send before delete: an interruption in between leaves a copy in both, never in neither.
* a **relay's failure queue** holds Lambda's on-failure records of stream batches the relay
  gave up on: a shard and a sequence number range, not events. Nothing there can be sent again
  as a message; ``replay`` says so and what to do instead, and leaves them.

``list`` prints, per message, only envelope fields (type, event id, receive count, first
failure time; for relay failures the shard and the range), never a body. SQS has no peek: the
messages are received with a short visibility timeout and made visible again at once, so each
``list`` adds one to their receive counts (the count shown leaves this ``list``'s own receive
out, not an earlier one's).

Where: ``--stage local`` (the default) is the running ``make run``'s events endpoint on
``EVENTS_PORT`` (default 5102); any other stage is AWS through the normal credential chain, or
LocalStack with ``--localstack`` (``AWS_ENDPOINT_URL``, default ``http://127.0.0.1:4566``, as
``tools.stages.localstack_environment`` sets it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from tools import topology
from tools.local import events as local_events
from tools.local.process import HOST

PEEK_SECONDS = 30  # how long a listed message is hidden if making it visible again fails
# The message attributes EventBridge gives an event it dead-letters (its documented set): the
# failed delivery, not the event. ERROR_MESSAGE is cut to this length in a listing.
EVENTBRIDGE_DLQ_ATTRIBUTES = frozenset(
    {
        "ERROR_CODE",
        "ERROR_MESSAGE",
        "EXHAUSTED_RETRY_CONDITION",
        "RETRY_ATTEMPTS",
        "RULE_ARN",
        "TARGET_ARN",
    }
)
ERROR_MESSAGE_SHOWN = 200
LIST_MAX = 100  # messages shown per queue
SQS_BATCH = 10


class EventsCommandError(RuntimeError):
    """Something the operator must act on (nothing listening, a queue that is not there)."""


@dataclass(frozen=True)
class DeadLetters:
    """One dead-letter queue of the topology, and where its messages came from."""

    name: str
    kind: str  # "consumer" or "relay"
    owner: str  # "user_api on_product_events"
    source: str | None  # the consumer's queue; None for a relay's failure queue

    @property
    def replayable(self) -> bool:
        return self.source is not None


def dead_letter_queues(stage: str) -> list[DeadLetters]:
    found = [
        DeadLetters(
            s.dead_letter_queue_name(stage),
            "consumer",
            f"{s.service.name} {s.handler}",
            s.queue_name(stage),
        )
        for s in topology.SUBSCRIPTIONS
    ]
    found += [
        DeadLetters(r.failure_queue_name(stage), "relay", f"{r.service.name} {r.handler}", None)
        for r in topology.RELAYS
    ]
    return found


# --------------------------------------------------------------------------------------------
# clients


def local_endpoint(environ: Mapping[str, str] = os.environ) -> str:
    port = environ.get(local_events.PORT_ENV, "").strip() or str(local_events.DEFAULT_PORT)
    return f"http://{HOST}:{port}"


def sqs_client(stage: str, localstack: bool) -> tuple[Any, str]:
    """An SQS client for the stage and a description of where it points."""
    if localstack:
        from tools.stages import localstack_environment

        endpoint = localstack_environment()
        return local_events.client("sqs", read_timeout=10), f"LocalStack at {endpoint}"
    if stage == "local":
        endpoint = local_endpoint()
        return local_events.client("sqs", endpoint, read_timeout=10), f"make run's {endpoint}"
    import boto3

    client = boto3.client("sqs")
    return client, f"AWS ({client.meta.region_name})"


def _url(sqs: Any, name: str) -> str | None:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except Exception as exc:
        if local_events.error_code(exc) in local_events.MISSING_QUEUE_CODES:
            return None
        raise


def _connected(call: Callable[[], Any], where: str) -> Any:
    from botocore.exceptions import EndpointConnectionError

    try:
        return call()
    except EndpointConnectionError as exc:
        hint = " Is make run running?" if "make run" in where else ""
        raise EventsCommandError(f"nothing answers at {where}.{hint}") from exc


# --------------------------------------------------------------------------------------------
# reading messages without keeping them


def _receive(sqs: Any, url: str, count: int, visibility: int) -> list[dict[str, Any]]:
    answer = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=max(1, min(SQS_BATCH, count)),
        WaitTimeSeconds=1,
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    return list(answer.get("Messages", []))


def peek(sqs: Any, url: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` messages, made visible again before returning."""
    seen: dict[str, dict[str, Any]] = {}
    handles: list[str] = []
    while len(seen) < limit:
        batch = _receive(sqs, url, limit - len(seen), PEEK_SECONDS)
        fresh = [m for m in batch if m["MessageId"] not in seen]
        handles += [m["ReceiptHandle"] for m in batch]
        if not fresh:
            break
        seen.update((m["MessageId"], m) for m in fresh)
    for start in range(0, len(handles), SQS_BATCH):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for i, handle in enumerate(handles[start : start + SQS_BATCH])
        ]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
    return list(seen.values())


def _time(millis: Any) -> str:
    try:
        when = datetime.fromtimestamp(int(millis) / 1000, UTC)
    except (TypeError, ValueError, OverflowError):
        return "?"
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _string_attribute(message: Mapping[str, Any], name: str) -> str | None:
    value = (message.get("MessageAttributes") or {}).get(name) or {}
    return str(value["StringValue"]) if "StringValue" in value else None


def describe_consumer_message(message: Mapping[str, Any]) -> str:
    """One line of envelope fields: type, event id, and how it failed: the consumer's receives
    and first failure, or, for an event EventBridge could not deliver to the queue, its error
    code, retries, when it was dead-lettered and its error message. No body."""
    attributes = message.get("Attributes", {})
    try:
        outer = json.loads(message.get("Body", ""))
        detail = outer.get("detail") if isinstance(outer, dict) else None
        kind = (detail or {}).get("type") or outer.get("detail-type")
        event_id = (detail or {}).get("id") or "?"
    except (ValueError, AttributeError):
        kind, event_id = "(not an event)", "?"
    code = _string_attribute(message, "ERROR_CODE")
    if code is not None:
        # Never in the consumer's queue: its receive counts are this listing's own.
        retries = _string_attribute(message, "RETRY_ATTEMPTS") or "?"
        error = (_string_attribute(message, "ERROR_MESSAGE") or "")[:ERROR_MESSAGE_SHOWN]
        how = (
            f"not delivered by EventBridge: {code}, {retries} retries, dead-lettered "
            f"{_time(attributes.get('SentTimestamp'))}"
        )
        ending = f"(message {message['MessageId']})" + (f"  {error}" if error else "")
        return f"{kind!s:<16} event {event_id}  {how}  {ending}"
    receives = max(int(attributes.get("ApproximateReceiveCount", "1")) - 1, 0)
    first = _time(attributes.get("ApproximateFirstReceiveTimestamp"))
    return (
        f"{kind!s:<16} event {event_id}  receives {receives}  first failure {first}  "
        f"(message {message['MessageId']})"
    )


def describe_relay_failure(message: Mapping[str, Any]) -> str:
    """One line of a Lambda on-failure record: condition, shard, range, when."""
    try:
        record = json.loads(message.get("Body", ""))
        info = record["DDBStreamBatchInfo"]
        condition = record.get("requestContext", {}).get("condition", "?")
        return (
            f"{condition}  shard {info['shardId']}  sequence numbers "
            f"{info['startSequenceNumber']}..{info['endSequenceNumber']} "
            f"({info.get('batchSize', '?')} records)  at {record.get('timestamp', '?')}  "
            f"stream {info.get('streamArn', '?')}"
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"(not a stream failure record: message {message['MessageId']})"


# --------------------------------------------------------------------------------------------
# commands


def list_dead_letters(sqs: Any, stage: str, out: TextIO, limit: int = LIST_MAX) -> int:
    """Print every dead-letter queue of the stage with its messages; return how many there are."""
    total = 0
    for queue in dead_letter_queues(stage):
        url = _url(sqs, queue.name)
        if url is None:
            out.write(f"{queue.name} ({queue.owner}): not found for stage {stage}\n")
            continue
        counts = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        visible = int(counts.get("ApproximateNumberOfMessages", 0))
        hidden = int(counts.get("ApproximateNumberOfMessagesNotVisible", 0))
        total += visible + hidden
        what = "consumer dead letters" if queue.kind == "consumer" else "relay failures"
        line = f"{queue.name} ({what} of {queue.owner}): {visible} message(s)"
        out.write(line + (f", {hidden} in flight\n" if hidden else "\n"))
        if not visible:
            continue
        messages = peek(sqs, url, limit)
        describe = describe_consumer_message if queue.replayable else describe_relay_failure
        for message in messages:
            out.write(f"  {describe(message)}\n")
        if visible > len(messages):
            out.write(f"  ... and about {visible - len(messages)} more\n")
    return total


RELAY_ADVICE = (
    "{name}: {count} record(s) of stream batches that {owner} gave up on.\n"
    "A relay retries a batch it cannot publish until the records are 24 h old (its\n"
    "MaximumRetryAttempts is -1), so a record here names a shard and a sequence number range of\n"
    "changes that were stored but whose events never reached the bus, and that the stream no\n"
    "longer holds: there is nothing to send again, so replay leaves them. The IteratorAge alarm\n"
    "fires long before this. Reconcile by hand: the range says when; the table says what (for\n"
    "products, their created_at), then delete the failure records.\n"
)


def replay(
    sqs: Any, stage: str, out: TextIO, queue_name: str | None = None, limit: int | None = None
) -> int:
    """Move consumer dead letters back to their queues; return how many were moved. Relay
    failure queues are explained, not touched. ``queue_name`` may name a dead-letter queue, a
    consumer's own queue or a relay failure queue of the stage."""
    queues = dead_letter_queues(stage)
    if queue_name is not None:
        queues = [q for q in queues if queue_name in (q.name, q.source)]
        if not queues:
            known = ", ".join(q.name for q in dead_letter_queues(stage))
            raise EventsCommandError(f"{queue_name} is no dead-letter queue of {stage} ({known})")
    moved_total = 0
    for queue in queues:
        url = _url(sqs, queue.name)
        if url is None:
            out.write(f"{queue.name}: not found for stage {stage}\n")
            continue
        if not queue.replayable:
            count = int(
                sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"].get("ApproximateNumberOfMessages", 0)
            )
            if count or queue_name is not None:
                out.write(RELAY_ADVICE.format(name=queue.name, count=count, owner=queue.owner))
            continue
        assert queue.source is not None
        source_url = _url(sqs, queue.source)
        if source_url is None:
            out.write(f"{queue.name}: its source queue {queue.source} is not there; skipped\n")
            continue
        moved = _move(sqs, url, source_url, None if limit is None else limit - moved_total)
        moved_total += moved
        out.write(f"{queue.name}: {moved} message(s) sent back to {queue.source}\n")
        if limit is not None and moved_total >= limit:
            break
    return moved_total


def _move(sqs: Any, dlq_url: str, source_url: str, limit: int | None) -> int:
    """Send each message to the source queue, then delete it from the dead-letter queue.

    A body sent back once in this run and dead-lettered again meanwhile (a consumer that still
    fails, with the local seconds-long visibility timeout) ends the run rather than going round
    again: it is left where it is, for the operator to look at.
    """
    moved = 0
    sent_bodies: set[str] = set()
    while limit is None or moved < limit:
        wanted = SQS_BATCH if limit is None else limit - moved
        received = _receive(sqs, dlq_url, wanted, PEEK_SECONDS)
        batch = [m for m in received if m["Body"] not in sent_bodies]
        again = [m for m in received if m["Body"] in sent_bodies]
        if again:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(again)
            ]
            sqs.change_message_visibility_batch(QueueUrl=dlq_url, Entries=entries)
        if not batch:
            break
        sent_bodies.update(m["Body"] for m in batch)
        entries = []
        for i, message in enumerate(batch):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            kept = {
                name: value
                for name, value in (message.get("MessageAttributes") or {}).items()
                if name not in EVENTBRIDGE_DLQ_ATTRIBUTES
            }
            if kept:
                entry["MessageAttributes"] = kept
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        done = {entry["Id"] for entry in sent.get("Successful", [])}
        for failure in sent.get("Failed", []):
            # Left in the dead-letter queue; visible again after PEEK_SECONDS.
            sys.stderr.write(f"could not send a message back: {failure.get('Code')}\n")
        deletes = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(batch)
            if str(i) in done
        ]
        if deletes:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=deletes)
        moved += len(deletes)
        if not done:
            break
    return moved


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """0 when done, 1 when the endpoint or a queue is not there (the message says which)."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--stage", default="local", help="stage (default: local, i.e. make run)")
    where.add_argument(
        "--localstack", action="store_true", help="LocalStack's endpoint (AWS_ENDPOINT_URL)"
    )
    parser = argparse.ArgumentParser(
        prog="python -m tools.events", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="area", required=True)
    dlq = commands.add_parser("dlq", help="dead-letter queues").add_subparsers(
        dest="command", required=True
    )
    listing = dlq.add_parser("list", parents=[where], help="count and describe dead letters")
    listing.add_argument("--max", type=int, default=LIST_MAX, help="messages shown per queue")
    again = dlq.add_parser("replay", parents=[where], help="send consumer dead letters back")
    again.add_argument("--queue", help="only this dead-letter queue (or consumer queue)")
    again.add_argument("--max", type=int, help="move at most this many messages")
    args = parser.parse_args(argv)
    if args.max is not None and args.max < 1:
        parser.error("--max must be at least 1")
    sqs, described = sqs_client(args.stage, args.localstack)
    out.write(f"dead-letter queues of stage {args.stage} on {described}\n")
    try:
        if args.command == "list":
            _connected(lambda: list_dead_letters(sqs, args.stage, out, args.max), described)
        else:
            moved = _connected(
                lambda: replay(sqs, args.stage, out, args.queue, args.max), described
            )
            out.write(f"replayed {moved} message(s)\n")
    except EventsCommandError as exc:
        out.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
