"""Events between the services: the envelope, the relay from a table's stream to the bus, and
the consumer side's batch handling and idempotency.

The table stream is the outbox. A service never writes its table and then publishes (a dual
write that can do one without the other): its relay function reads the table's stream (new and
old images) and turns the changes it cares about into domain events on the stage's EventBridge
bus, so an event exists if and only if the change was stored. A rule on the bus feeds each
consumer's own SQS queue; the consumer function reports the messages it could not apply
(``batchItemFailures``) and everything else is deleted.

Delivery is at least once at every hop (a stream batch is retried from its first failed record,
a queue message until it is deleted), so:

* an event's ``id`` is derived from the stream record it came from (``event_id``): a record
  relayed twice is the same event, not a new one;
* a consumer applies an event in the same DynamoDB transaction that records its id
  (``apply_once``), so a redelivered event finds its record and changes nothing.

The envelope (``docs/events.md``): ``{"id", "type", "version", "source", "time", "data"}``, the
EventBridge entry's ``detail``; the entry's ``source`` and ``detail-type`` repeat ``source`` and
``type`` so rules can match on them.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from svckit import aws, config, dynamo, metrics

PROJECT = config.PROJECT
USER_SOURCE = f"{PROJECT}.user_api"
PRODUCT_SOURCE = f"{PROJECT}.product_api"
# The event types of API.md, by the service that announces them.
PRODUCT_ADDED = "ProductAdded"
PRODUCT_DELETED = "ProductDeleted"
USER_REGISTERED = "UserRegistered"
USER_DELETED = "UserDeleted"
SCHEMA_VERSION = 1
BUS_SETTING = "EVENT_BUS_NAME"
PROCESSED_TABLE_SETTING = "PROCESSED_EVENTS_TABLE"
# How long a consumer remembers an event it applied. It must outlast every way the same event can
# come back: a stream record (24 h), a message in a dead-letter queue (14 days at most) and the
# bus's archive (tools/topology.ARCHIVE_RETENTION_DAYS), or a late replay would apply it again.
PROCESSED_RETENTION_SECONDS = 30 * 24 * 3600
# What Chalice's decorators are given: the real ARNs exist only once the stack has made the table
# and the queue, so infra/events.py replaces these in the template (a test refuses a template
# still holding one); the local runner wires the handlers itself. No AWS call ever uses them.
STREAM_ARN_PLACEHOLDER = "arn:aws:dynamodb:us-east-1:000000000000:table/set-by-deploy/stream/0"
QUEUE_ARN_PLACEHOLDER = "arn:aws:sqs:us-east-1:000000000000:set-by-deploy"
# A transaction that conflicts with another on the same item is tried this many times in all,
# pausing up to CONFLICT_PAUSE_SECONDS times the attempt number in between.
CONFLICT_ATTEMPTS = 3
CONFLICT_PAUSE_SECONDS = 0.05
PUT_EVENTS_MAX_ENTRIES = 10  # EventBridge's limit per PutEvents call
PUT_EVENTS_MAX_BYTES = 256 * 1024  # and its limit on a call's entries, by entry_size
_TIME_FIELD_BYTES = 14  # what an entry's Time counts in EventBridge's formula, when present
# How many times a consumer's queue hands out a message before moving it to the dead-letter
# queue (the redrive policy's ``maxReceiveCount``). Defined here rather than in tools/topology.py
# because the consumer needs it too: a failure on the last try is counted as dead-lettered
# (``EventsDeadLettered``), and the topology's subscriptions take it as their default.
MAX_RECEIVE_COUNT = 5
# A change DynamoDB made itself (a TTL expiry) rather than the service: not a domain event.
_DYNAMODB_SERVICE = "dynamodb.amazonaws.com"
_NAMESPACE = uuid.UUID("8c3a4b6e-2f51-4f0e-9d2a-3f1b6c5e7a90")


class EventError(Exception):
    """A message that is not an event this consumer can read: retried, then dead-lettered."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    version: int
    source: str
    time: str
    data: Mapping[str, Any]

    def envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "source": self.source,
            "time": self.time,
            "data": dict(self.data),
        }

    @classmethod
    def from_message(cls, body: str) -> Event:
        """The event in an SQS message body, which is the EventBridge event as the rule's target
        received it (our envelope is its ``detail``). Anything else is an EventError."""
        try:
            outer = json.loads(body)
        except ValueError as exc:
            raise EventError("message body is not JSON") from exc
        detail = outer.get("detail") if isinstance(outer, dict) else None
        if not isinstance(detail, dict):
            raise EventError("message has no event detail")
        try:
            event = cls(
                id=str(detail["id"]),
                type=str(detail["type"]),
                version=int(detail["version"]),
                source=str(detail["source"]),
                time=str(detail["time"]),
                data=detail["data"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventError(f"event envelope is missing or has a malformed {exc}") from exc
        if not isinstance(event.data, dict) or not event.id:
            raise EventError("event envelope has no id or its data is not an object")
        if _instant(event.time) is None:
            # Our producers write UTC with a zone; a time without one cannot be compared with
            # the clock (the lag), so the message is refused here, where its failure is its own.
            raise EventError("event time is not an ISO 8601 time with a zone")
        if event.version != SCHEMA_VERSION:
            # A newer producer's event: waits in the dead-letter queue for a consumer that
            # knows its version, rather than being misread.
            raise EventError(f"event version {event.version} is not supported")
        return event


def event_id(source: str, stream_event_id: str) -> str:
    """The id of the event made from one stream record: the same record, relayed again after a
    failure or a retried batch, gives the same id, so consumers see it as the same event."""
    return str(uuid.uuid5(_NAMESPACE, f"{source}/{stream_event_id}"))


def _iso(seconds: float) -> str:
    when = datetime.fromtimestamp(seconds, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Change:
    """One stream record, decoded: what the relay's mapping decides on."""

    name: str  # INSERT, MODIFY or REMOVE
    new: dict[str, Any] | None
    old: dict[str, Any] | None
    record: Mapping[str, Any]

    @property
    def by_service(self) -> bool:
        """Made by DynamoDB itself (a TTL expiry), not by the service's code."""
        identity = self.record.get("userIdentity") or {}
        return identity.get("principalId") == _DYNAMODB_SERVICE


def _change(record: Mapping[str, Any]) -> Change:
    images = record.get("dynamodb", {})
    new, old = images.get("NewImage"), images.get("OldImage")
    return Change(
        name=str(record.get("eventName")),
        new=dynamo.from_wire_item(new) if new else None,
        old=dynamo.from_wire_item(old) if old else None,
        record=record,
    )


# What a relay's mapping returns for a change: (type, data) to announce, or None to skip it.
ToEvent = Callable[[Change], tuple[str, dict[str, Any]] | None]


def bus_name() -> str:
    return config.require(BUS_SETTING)


def _events_client() -> Any:
    """Made on first use: the consumer functions never publish, so only relays build it."""
    return aws.make_client("events")


events_client = dynamo._once(_events_client)


def relay(
    records: Sequence[Mapping[str, Any]], source: str, to_event: ToEvent, log: Any
) -> dict[str, Any]:
    """Publish the events of one stream batch, in stream order; return Lambda's partial batch
    answer.

    Chunks of ten go out with one PutEvents each. PutEvents can fail for some entries only and
    still answer 200 (``FailedEntryCount``), so each entry's result is checked: the first record
    that did not get onto the bus, and every record after it, are reported by the sequence number
    of that first one, from which Lambda retries (``ReportBatchItemFailures`` on a stream). The
    records before it are not sent again, and those after it are: which consumers absorb, since
    a record's event id is the same every time.
    """
    pending: list[tuple[str, dict[str, Any]]] = []  # (sequence number, entry)
    unreadable: str | None = None  # the first record the mapping failed on
    for record in records:
        try:
            change = _change(record)
            if change.by_service:
                continue
            announced = to_event(change)
        except Exception as exc:  # a record this code cannot map: the records before it go out
            unreadable = str(record.get("dynamodb", {}).get("SequenceNumber", ""))
            log.error("relay: a stream record could not be mapped", error=type(exc).__name__)
            break
        if announced is None:
            continue
        kind, data = announced
        created = record.get("dynamodb", {}).get("ApproximateCreationDateTime", time.time())
        event = Event(
            id=event_id(source, str(record["eventID"])),
            type=kind,
            version=SCHEMA_VERSION,
            source=source,
            time=_iso(float(created)),
            data=data,
        )
        entry = {
            "Source": source,
            "DetailType": kind,
            # UTF-8 as it is: an escaped emoji would count 12 bytes against the bus's limit, not 4.
            "Detail": json.dumps(
                event.envelope(), default=str, separators=(",", ":"), ensure_ascii=False
            ),
            "EventBusName": bus_name(),
        }
        pending.append((str(record["dynamodb"]["SequenceNumber"]), entry))
    for start, chunk in _chunks(pending):
        try:
            answer = events_client().put_events(Entries=[entry for _, entry in chunk])
        except (ClientError, BotoCoreError) as exc:
            log.warning("relay: PutEvents failed", error=type(exc).__name__, events=len(chunk))
            return _failed_from(chunk[0][0])
        results = answer.get("Entries", [])
        partial = bool(answer.get("FailedEntryCount", 0)) or len(results) != len(chunk)
        for index, (_, entry) in enumerate(chunk):
            # Every entry with an id is on the bus, those after a refused one included (they
            # are sent again with the retry, and the consumers see the same event id twice).
            if not partial or (index < len(results) and results[index].get("EventId")):
                metrics.add(metrics.EVENTS_RELAYED, 1, type=entry["DetailType"])
        if partial:
            for index, (sequence, _) in enumerate(chunk):
                result = results[index] if index < len(results) else {}
                if not result.get("EventId"):
                    log.warning(
                        "relay: an event was refused by the bus",
                        error=result.get("ErrorCode", "missing result"),
                        sent=start + index,
                    )
                    return _failed_from(sequence)
        for _, entry in chunk:
            log.info("event relayed", type=entry["DetailType"])
    if unreadable:
        # Retried from that record (after the retries, its position goes to the failure queue,
        # and a fixed relay can be pointed at it), never skipped in silence.
        return _failed_from(unreadable)
    return {"batchItemFailures": []}


def entry_size(entry: Mapping[str, Any]) -> int:
    """A PutEvents entry's size as EventBridge counts it against its 256 KiB limit: 14 bytes
    for a Time, and the UTF-8 bytes of Source, DetailType, Detail and each Resource."""
    size = _TIME_FIELD_BYTES if entry.get("Time") is not None else 0
    for field in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(field) or "").encode())
    return size + sum(len(str(r).encode()) for r in entry.get("Resources") or ())


def _chunks(
    pending: list[tuple[str, dict[str, Any]]],
) -> Iterator[tuple[int, list[tuple[str, dict[str, Any]]]]]:
    """The entries in request-sized runs, in order: at most PUT_EVENTS_MAX_ENTRIES and
    PUT_EVENTS_MAX_BYTES each (an event is at most a product's 64 KiB body, so one always fits);
    yields each run with the index of its first entry."""
    start, run, size = 0, [], 0
    for index, item in enumerate(pending):
        item_size = entry_size(item[1])
        if run and (len(run) == PUT_EVENTS_MAX_ENTRIES or size + item_size > PUT_EVENTS_MAX_BYTES):
            yield start, run
            start, run, size = index, [], 0
        run.append(item)
        size += item_size
    if run:
        yield start, run


def _failed_from(sequence_number: str) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": sequence_number}]}


# -- consumers --

Handler = Callable[[Event], str]  # applies an event; returns its outcome ("applied", ...)
# The outcome that changed something (counted as applied, with its lag); any other outcome
# ("duplicate", "skipped: ...") is counted as skipped.
APPLIED = "applied"
# The metrics' ``type`` of a message that is not a readable event, and of an event type this
# consumer has no handler for.
UNREADABLE = "unreadable"
OTHER_TYPE = "other"


def consume(
    records: Iterable[Mapping[str, Any]], handlers: Mapping[str, Handler], log: Any
) -> dict[str, Any]:
    """Apply each SQS message of a batch on its own; return Lambda's partial batch answer, naming
    only the messages that failed (they come back after the visibility timeout, and after the
    queue's ``maxReceiveCount`` tries go to its dead-letter queue). One bad message never holds
    up the others. An event type with no handler was not subscribed to: it is logged and
    dropped, not retried, since no retry can help it.
    """
    failures = []
    for record in records:
        message_id = str(record.get("messageId", ""))
        received = (record.get("attributes") or {}).get("ApproximateReceiveCount", "1")
        # The metrics' ``type``: an event type this consumer handles, or a fixed word, so a
        # message's own content can never add a series.
        kind = UNREADABLE
        try:
            event = Event.from_message(str(record.get("body", "")))
            handler = handlers.get(event.type)
            kind = event.type if handler is not None else OTHER_TYPE
            if handler is None:
                log.warning("event type not handled here", type=event.type, event_id=event.id)
                metrics.add(metrics.EVENTS_SKIPPED, 1, type=kind)
                continue
            outcome = handler(event)
            _count(event, kind, outcome, log)
        except Exception as exc:  # one message's failure, whatever it is, stays its own
            log.warning(
                "event failed",
                message_id=message_id,
                receive_count=received,
                error=type(exc).__name__,
                reason=str(exc) if isinstance(exc, EventError) else None,
            )
            failures.append({"itemIdentifier": message_id})
            metrics.add(metrics.EVENTS_FAILED, 1, type=kind)
            if _receive_count(received) >= MAX_RECEIVE_COUNT:
                # Its last try: the queue moves it to the dead-letter queue rather than
                # handing it out again.
                metrics.add(metrics.EVENTS_DEAD_LETTERED, 1, type=kind)
    return {"batchItemFailures": failures}


def _count(event: Event, kind: str, outcome: str, log: Any) -> None:
    """The consumed event's log line and metrics. Called inside the message's own ``try``:
    nothing after a handler may fail the batch (the messages after it would never be tried)."""
    lag_ms = _lag_ms(event.time)
    log.info("event consumed", type=event.type, event_id=event.id, outcome=outcome, lag_ms=lag_ms)
    if outcome == APPLIED:
        metrics.add(metrics.EVENTS_APPLIED, 1, type=kind)
        if lag_ms is not None:
            # A clock behind the producer's is not a negative lag.
            metrics.add(metrics.EVENT_LAG, max(lag_ms, 0), type=kind)
    else:
        metrics.add(metrics.EVENTS_SKIPPED, 1, type=kind)


def _receive_count(raw: object) -> int:
    try:
        return int(str(raw))
    except ValueError:
        return 1


def _instant(when: str) -> datetime | None:
    """An ISO 8601 time with its zone; None for anything else (a naive time included)."""
    try:
        stamp = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def _lag_ms(when: str) -> int | None:
    stamp = _instant(when)
    if stamp is None:
        return None
    return round((datetime.now(UTC) - stamp).total_seconds() * 1000)


def processed_table() -> str:
    return config.require(PROCESSED_TABLE_SETTING)


class AlreadyApplied(Exception):
    """The event's id is recorded: it was applied (or skipped) before; nothing changed now."""


class ConditionNotMet(Exception):
    """The change's own condition failed (its target is gone): nothing changed, not recorded."""


def processed_record(event: Event, outcome: str) -> dict[str, Any]:
    """The item that marks ``event`` as done, in the consumer's processed-events table."""
    return {
        "Put": {
            "TableName": processed_table(),
            "Item": dynamo.to_item(
                {
                    "event_id": event.id,
                    "type": event.type,
                    "outcome": outcome,
                    "processed_at": int(time.time()),
                    "expires_at": int(time.time()) + PROCESSED_RETENTION_SECONDS,
                }
            ),
            "ConditionExpression": "attribute_not_exists(event_id)",
        }
    }


def apply_once(event: Event, changes: Sequence[Mapping[str, Any]], outcome: str) -> None:
    """Apply ``changes`` (TransactWriteItems entries) and record ``event`` as done, in one
    transaction: either both happen or neither. A redelivered event finds its record and raises
    AlreadyApplied with nothing changed; a change whose own condition fails raises
    ConditionNotMet, also with nothing changed (the caller decides what that means).

    Each call has a ``ClientRequestToken`` of its own, so a botocore retry of the call (its
    answer lost) is recognised by DynamoDB as the same transaction. It must not be derived from
    the event: DynamoDB refuses a token reused with other parameters for ten minutes
    (IdempotentParameterMismatch), and a redelivery's record has other timestamps, so every
    duplicate within ten minutes would fail until its dead-letter queue. Duplicates are the
    record's condition's business, not the token's.

    A conflict with a concurrent transaction on the same item (consumers running in parallel,
    each granting points to one busy user) is tried again here, a few times, after a short
    random pause, rather than sent back to the queue, where each try costs a visibility timeout
    and counts towards the dead-letter queue.
    """
    items = [processed_record(event, outcome), *changes]
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            dynamo.client().transact_write_items(
                TransactItems=items, ClientRequestToken=uuid.uuid4().hex
            )
            return
        except ClientError as exc:
            if dynamo.error_code(exc) != "TransactionCanceledException":
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise AlreadyApplied(event.id) from exc
            if "ConditionalCheckFailed" in reasons[1:]:
                raise ConditionNotMet(event.id) from exc
            if "TransactionConflict" not in reasons or attempt == CONFLICT_ATTEMPTS:
                raise  # throttling, or conflicts that persist: retried by redelivery
        time.sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * attempt))  # noqa: S311 (jitter)


def was_applied(event: Event) -> bool:
    """Whether ``event`` is recorded as done (one consistent GetItem): for a consumer whose
    change cannot be one transaction, and so checks first and records last."""
    response = dynamo.client().get_item(
        TableName=processed_table(),
        Key={"event_id": {"S": event.id}},
        ConsistentRead=True,
        ProjectionExpression="event_id",
    )
    return "Item" in response


def record_once(event: Event, outcome: str) -> bool:
    """Record ``event`` as done without changing anything else (an event with nothing to apply);
    False when it was recorded already."""
    try:
        apply_once(event, (), outcome)
    except AlreadyApplied:
        return False
    return True
