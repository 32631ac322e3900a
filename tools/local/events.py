"""``make run``'s events: EventBridge and SQS from moto's server, wired from ``tools.topology``,
and the pollers that stand in for Lambda's event source mappings.

Deployed, two kinds of event source mapping feed the services' event handlers: one reads a
table's stream and invokes the service's relay (which puts events on the bus), one drains a
consumer's SQS queue (fed by a rule on the bus) and invokes the consumer. Locally:

* **The bus and the queues** run in a moto server of their own (``events``, port 5102), started
  and supervised by the runner beside the DynamoDB engine. ``wire`` creates, from the topology
  and nothing else, what the deploy's templates create: the stage's bus, each subscription's
  dead-letter queue, its queue (``RedrivePolicy`` with the subscription's ``maxReceiveCount``,
  the *local* visibility timeout so a poison message reaches its DLQ in seconds) and its rule
  and target, and each relay's failure queue. moto keeps all of it in memory, so the runner
  wires again whenever that program restarts (as it creates tables again after an engine
  restart).
* **The pollers** (``StreamPoller``, ``QueuePoller``) run in one worker process per data
  service (``tools.local.eventworker``) and call the handler objects in-process, with the
  events Lambda builds and Lambda's rules for what happens next: a stream batch is retried from
  the first failed record up to the relay's ``maximum_retry_attempts`` and then recorded in the
  failure queue, an SQS message is deleted only when the handler did not name it as failed.
  They move events and nothing else; every decision about an event is the handler's.

Lambda behaviours reproduced only roughly or not at all: ``BisectBatchOnFunctionError`` halves
the batch that is retried after a function error, but the second half is then read as part of
the next full batch rather than retried on its own; there is one poller thread per shard walk
or queue, never several in parallel; SQS batch windows and batches larger than ten messages do
not exist here (one ``ReceiveMessage`` of at most ten is one invocation).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tools import topology
from tools.local import dynamodb
from tools.topology import Relay, Subscription

EVENTS = "events"  # the moto program's name and output prefix
DEFAULT_PORT = 5102  # beside DynamoDB (5100) and the metrics (5101)
PORT_ENV = "EVENTS_PORT"
REGION = dynamodb.REGION
FAKE_CREDENTIALS = dynamodb.FAKE_CREDENTIALS
# The idle poll interval of a stream: a change reaches its relay within this much (plus one
# GetRecords, a few milliseconds locally). Each empty GetRecords costs DynamoDB Local CPU:
# measured idle, two relays at 0.15 s kept it at 8% of a core (2% without the events; 12% at
# 0.1 s), the two workers at 2% each.
STREAM_POLL_SECONDS = 0.15
# How often a stream poller looks again for a new stream (a table made again, as a restarted
# moto engine does) and new shards.
DESCRIBE_SECONDS = 2.0
# SQS long poll: an answer as soon as a message arrives, at most this long a call otherwise.
QUEUE_WAIT_SECONDS = 1
SQS_MAX_MESSAGES = 10  # ReceiveMessage's limit; a larger batch_size is read as ten
# A failing stream batch waits before its next try, doubling up to the cap: a short outage (the
# events program restarting) is outlasted before the retries run out, as Lambda's are.
STREAM_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
ERROR_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)
# A poller that keeps failing the same way says so again at most this often.
REPEAT_ERROR_SECONDS = 30.0
ACCOUNT = "000000000000"


def worker_name(service_name: str) -> str:
    """``user_api`` -> ``user_worker``: the worker program's name and output prefix."""
    return f"{service_name.removesuffix('_api')}_worker"


# --------------------------------------------------------------------------------------------
# clients


def client(service: str, endpoint: str | None = None, read_timeout: float = 5.0) -> Any:
    """A boto3 client without botocore's own retries (the callers here decide how long to keep
    trying). With ``endpoint``: fake credentials and that endpoint, for the runner and the
    tests. Without: the process environment decides, as in the worker, whose environment the
    runner set (``AWS_ENDPOINT_URL_SQS`` and the others)."""
    return dynamodb.aws_client(service, endpoint, read_timeout)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


# SQS says "the queue is not there" with either code, depending on the protocol in use.
MISSING_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


# --------------------------------------------------------------------------------------------
# wiring


def queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def ensure_queue(sqs: Any, name: str, attributes: Mapping[str, str]) -> tuple[str, bool]:
    """The queue's URL, creating it when missing; its attributes are set either way, so a
    changed topology (a new visibility timeout) applies to queues that already exist."""
    try:
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except Exception as exc:
        if error_code(exc) not in MISSING_QUEUE_CODES:
            raise
        return str(sqs.create_queue(QueueName=name, Attributes=dict(attributes))["QueueUrl"]), True
    sqs.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))
    return url, False


def wire(sqs: Any, events: Any, stage: str) -> list[str]:
    """Create the stage's bus, queues, dead-letter queues and rules from the topology (only
    what is missing; attributes, rules and targets are put again, which changes nothing when
    they are already right). Returns what was created."""
    created: list[str] = []
    bus = topology.bus_name(stage)
    try:
        events.create_event_bus(Name=bus)
        created.append(f"bus {bus}")
    except Exception as exc:
        if error_code(exc) != "ResourceAlreadyExistsException":
            raise
    retention = str(topology.DLQ_RETENTION_SECONDS)
    for sub in topology.SUBSCRIPTIONS:
        dlq_url, made = ensure_queue(
            sqs, sub.dead_letter_queue_name(stage), {"MessageRetentionPeriod": retention}
        )
        if made:
            created.append(sub.dead_letter_queue_name(stage))
        redrive = {
            "deadLetterTargetArn": queue_arn(sqs, dlq_url),
            "maxReceiveCount": sub.max_receive_count,
        }
        url, made = ensure_queue(
            sqs,
            sub.queue_name(stage),
            {
                "VisibilityTimeout": str(sub.local_visibility_timeout_seconds),
                "MessageRetentionPeriod": str(topology.QUEUE_RETENTION_SECONDS),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
        if made:
            created.append(sub.queue_name(stage))
        events.put_rule(
            Name=sub.rule_name(stage),
            EventBusName=bus,
            EventPattern=json.dumps(sub.event_pattern()),
            State="ENABLED",
        )
        events.put_targets(
            Rule=sub.rule_name(stage),
            EventBusName=bus,
            Targets=[{"Id": sub.queue, "Arn": queue_arn(sqs, url)}],
        )
    for relay in topology.RELAYS:
        _, made = ensure_queue(
            sqs, relay.failure_queue_name(stage), {"MessageRetentionPeriod": retention}
        )
        if made:
            created.append(relay.failure_queue_name(stage))
    return created


class EventsUnavailable(RuntimeError):
    """The events endpoint did not come up, or is not an SQS/EventBridge endpoint."""


def wire_when_ready(
    endpoint: str, stage: str, deadline: float, alive: Callable[[], bool] | None = None
) -> list[str]:
    """``wire`` once the endpoint answers (doubles as its readiness probe); ``alive()`` False
    means the program died, which is reported at once."""
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    sqs, events = client("sqs", endpoint), client("events", endpoint)
    while True:
        try:
            return wire(sqs, events, stage)
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
            if alive is not None and not alive():
                raise EventsUnavailable("the events endpoint exited while starting") from exc
            if time.monotonic() > deadline:
                raise EventsUnavailable(f"{endpoint} did not answer in time") from exc
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Lambda's shapes


class Context(Protocol):
    aws_request_id: str

    def get_remaining_time_in_millis(self) -> float: ...


Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class Function:
    """A handler as Lambda would hold it: the callable and what its context says about it."""

    name: str  # the deployed function's name (Chalice's ``app-stage-handler``)
    handler: Handler
    timeout_seconds: int = 60
    memory_mb: int = 128

    def context(self) -> Any:
        """A fresh context per invocation, as Lambda gives: its own request id and deadline."""
        from chalice.local import LambdaContext

        context = LambdaContext(
            self.name, self.memory_mb, max_runtime_ms=self.timeout_seconds * 1000
        )
        context.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"
        context.log_group_name = f"/aws/lambda/{self.name}"
        context.log_stream_name = f"local/{context.aws_request_id}"
        return context

    def __call__(self, event: dict[str, Any]) -> Any:
        return self.handler(event, self.context())


def failed_items(answer: Any, identifiers: Sequence[str]) -> list[str] | None:
    """The identifiers a handler's answer names as failed, in batch order; None when Lambda
    would count the whole batch as failed.

    Lambda's rules (``ReportBatchItemFailures``): no answer, an answer without
    ``batchItemFailures`` or with it empty or null is a full success; an answer that is not an
    object, a ``batchItemFailures`` that is not a list, or an item whose ``itemIdentifier`` is
    missing, empty, null or not in the batch is a full failure.
    """
    if answer is None:
        return []
    if not isinstance(answer, Mapping):
        return None
    failures = answer.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        return None
    named: set[str] = set()
    for item in failures:
        if not isinstance(item, Mapping):
            return None
        identifier = item.get("itemIdentifier")
        if not isinstance(identifier, str) or identifier not in identifiers:
            return None
        named.add(identifier)
    return [identifier for identifier in identifiers if identifier in named]


def sharpen_creation_time(record: dict[str, Any], read_at: float) -> dict[str, Any]:
    """DynamoDB Local rounds a record's ``ApproximateCreationDateTime`` down to the minute
    (DynamoDB gives it to the second or better), which would make every event look up to a
    minute old: the envelope's ``time`` and the consumers' lag are taken from it. The change
    was stored within that minute and before this read, so the earlier of the two is the best
    bound there is: the read itself for a fresh record (the poll comes within a fraction of a
    second), the minute's end for an old one read again. Other values are left as they are."""
    images = record.get("dynamodb")
    created = images.get("ApproximateCreationDateTime") if isinstance(images, dict) else None
    if isinstance(images, dict) and isinstance(created, int | float) and created % 60 == 0:
        images["ApproximateCreationDateTime"] = min(read_at, created + 60)
    return record


def stream_event(records: Sequence[Mapping[str, Any]], stream_arn: str) -> dict[str, Any]:
    """Lambda's DynamoDB event: the GetRecords records as they came over the wire (DynamoDB
    JSON, ``B`` values as base64 text, ``ApproximateCreationDateTime`` in epoch seconds), each
    with the stream's ARN added as ``eventSourceARN``."""
    return {"Records": [{**record, "eventSourceARN": stream_arn} for record in records]}


def _message_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """SQS's ``MessageAttributes`` in the lower camel case Lambda hands on (binary as base64)."""
    converted: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            item["binaryValue"] = (
                base64.b64encode(raw).decode() if isinstance(raw, bytes) else str(raw)
            )
        converted[name] = item
    return converted


def sqs_record(message: Mapping[str, Any], arn: str, region: str = REGION) -> dict[str, Any]:
    """One record of Lambda's SQS event, built from one ReceiveMessage message."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": _message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_epoch(seconds: Any) -> str | None:
    try:
        when = datetime.fromtimestamp(float(seconds), UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def stream_failure_record(
    function: Function,
    *,
    condition: str,
    invocations: int,
    function_error: bool,
    shard_id: str,
    stream_arn: str,
    records: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """What Lambda sends to a stream mapping's on-failure destination: where the batch was
    (``DDBStreamBatchInfo``), never the records themselves, which stay in the stream."""
    first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response["functionError"] = "Unhandled"
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function.name}",
            "condition": condition,
            "approximateInvokeCount": invocations,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": _iso_now(),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first["SequenceNumber"],
            "endSequenceNumber": last["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso_epoch(first.get("ApproximateCreationDateTime")),
            "approximateArrivalOfLastRecord": _iso_epoch(last.get("ApproximateCreationDateTime")),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


# --------------------------------------------------------------------------------------------
# pollers


Say = Callable[[str], None]


class _Trouble:
    """A poller's errors, said once and then at most every ``REPEAT_ERROR_SECONDS`` while they
    last (an endpoint down for a minute must not fill the screen), and the recovery said too."""

    def __init__(self, name: str, say: Say) -> None:
        self.name = name
        self.say = say
        self.failures = 0
        self._last_text = ""
        self._last_said = 0.0

    def failed(self, what: str, exc: BaseException) -> float:
        """Record one failure; return how long to wait before the next try."""
        self.failures += 1
        text = f"{what}: {type(exc).__name__}: {exc}".strip()
        now = time.monotonic()
        if text != self._last_text or now - self._last_said > REPEAT_ERROR_SECONDS:
            self.say(f"{self.name}: {text} (retrying)")
            self._last_text, self._last_said = text, now
        return ERROR_BACKOFF_SECONDS[min(self.failures, len(ERROR_BACKOFF_SECONDS)) - 1]

    def ok(self) -> None:
        if self.failures:
            self.say(f"{self.name}: working again after {self.failures} failed attempts")
        self.failures = 0
        self._last_text = ""


class Poller:
    """A thread's loop around ``poll_once``: errors are logged and retried with a short
    backoff, so an endpoint that goes away (moto restarting) never ends the thread."""

    name: str

    def __init__(self, name: str, say: Say) -> None:
        self.name = name
        self.say = say
        self.trouble = _Trouble(name, say)

    def poll_once(self) -> bool:
        """One step; True when there may be more to do at once (skip the idle wait)."""
        raise NotImplementedError

    def idle_seconds(self) -> float:
        return 0.0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.poll_once()
            except Exception as exc:  # any failure, whatever it is, is this loop's to outlast
                if stop.is_set():
                    return  # stopping, and the endpoints may be stopping too: nothing to say
                stop.wait(self.trouble.failed("polling failed", exc))
                continue
            self.trouble.ok()
            if not busy:
                stop.wait(self.idle_seconds())

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=self.name, daemon=True)
        thread.start()
        return thread


@dataclass
class _Shard:
    id: str
    parent: str | None
    iterator: str | None = None
    checkpoint: str | None = None  # the last record handed off (or given up on)
    retry_from: str | None = None  # the first record of a failing batch
    invocations: int = 0  # failed invocations of the batch starting at retry_from
    retry_at: float = 0.0
    done: bool = False  # closed and read to its end
    limit: int | None = None  # a halved batch size after a function error (bisect)


class Positions:
    """Where each shard's reading got to, in a JSON file, so a worker restarted within a run
    (a reload, a crash) goes on from there, as Lambda's event source mapping keeps its position
    across deployments of the function. Keyed by stream ARN: a table made again has a new
    stream, read from its start. The runner gives each worker a new file whenever the events
    endpoint starts, because its queues then hold nothing: reading the streams again from the
    start publishes again whatever was lost with them.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict[str, Any]]] = {}
        if path is not None and path.exists():
            try:
                self._data = json.loads(path.read_text())
            except ValueError:
                self._data = {}  # a torn file: read from the start, which loses nothing

    def get(self, stream_arn: str, shard_id: str) -> tuple[str | None, bool]:
        with self._lock:
            entry = self._data.get(stream_arn, {}).get(shard_id, {})
        return entry.get("checkpoint"), bool(entry.get("done"))

    def put(self, stream_arn: str, shard_id: str, checkpoint: str | None, done: bool) -> None:
        if self.path is None:
            return
        with self._lock:
            self._data.setdefault(stream_arn, {})[shard_id] = {
                "checkpoint": checkpoint,
                "done": done,
            }
            # Written whole and renamed: a worker killed mid-write leaves the old file.
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self._data))
            os.replace(partial, self.path)


class StreamPoller(Poller):
    """Lambda's DynamoDB stream event source mapping for one relay.

    Finds the table's ``LatestStreamArn``, walks its shards (a child only once its parent is
    read to the end; new shards are looked for every ``DESCRIBE_SECONDS``), starts at
    ``TRIM_HORIZON`` (the template's ``StartingPosition``), reads ``batch_size`` records at a
    time and invokes the relay. A batch the relay answers with a ``batchItemFailures``
    sequence number is read again from that record (the records before it are done); an
    exception or a malformed answer fails the whole batch. After ``maximum_retry_attempts``
    retries of the same batch its range goes to the relay's failure queue, as Lambda's
    on-failure destination, and the shard moves on. Records older than
    ``maximum_record_age_seconds`` go the same way without an invocation.

    Where each shard got to is kept in ``positions`` (a file the runner names), so a worker
    restarted within a run goes on from there; without one, or with a fresh one, the stream is
    read from its trim horizon, which loses nothing and publishes again what was published
    before (the consumers are meant to apply an event id once).
    """

    def __init__(
        self,
        relay: Relay,
        function: Function,
        *,
        table: str,
        stage: str,
        streams: Any,
        dynamodb_client: Any,
        sqs: Any,
        say: Say,
        retry_delays: Sequence[float] = STREAM_RETRY_DELAYS,
        poll_seconds: float = STREAM_POLL_SECONDS,
        positions: Positions | None = None,
    ) -> None:
        super().__init__(relay.handler, say)
        self.positions = positions or Positions(None)
        self.relay = relay
        self.function = function
        self.table = table
        self.stage = stage
        self.streams = streams
        self.dynamodb = dynamodb_client
        self.sqs = sqs
        self.retry_delays = tuple(retry_delays)
        self.poll_seconds = poll_seconds
        self.stream_arn: str | None = None
        self.shards: dict[str, _Shard] = {}
        self._next_describe = 0.0
        self._failure_queue_url: str | None = None
        self._raw: threading.local = threading.local()
        # botocore parses GetRecords into Python values (bytes, datetimes); Lambda hands on the
        # wire's JSON. The raw body is kept as it arrives and read from there.
        streams.meta.events.register("after-call.dynamodb-streams.GetRecords", self._keep_raw)

    def _keep_raw(self, http_response: Any, **_: Any) -> None:
        self._raw.body = http_response.content

    def idle_seconds(self) -> float:
        return self.poll_seconds

    # -- finding the stream and its shards --

    def describe(self) -> None:
        table = self.dynamodb.describe_table(TableName=self.table)["Table"]
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise RuntimeError(f"table {self.table} has no stream enabled")
        if arn != self.stream_arn:
            if self.stream_arn is not None:
                self.say(f"{self.name}: {self.table} has a new stream; reading it from the start")
            self.stream_arn = arn
            self.shards = {}
            self._failure_queue_url = None
        start: str | None = None
        while True:
            extra = {"ExclusiveStartShardId": start} if start else {}
            described = self.streams.describe_stream(StreamArn=arn, **extra)["StreamDescription"]
            for shard in described.get("Shards", []):
                if shard["ShardId"] not in self.shards:
                    checkpoint, done = self.positions.get(arn, shard["ShardId"])
                    self.shards[shard["ShardId"]] = _Shard(
                        shard["ShardId"],
                        shard.get("ParentShardId"),
                        checkpoint=checkpoint,
                        done=done,
                    )
            start = described.get("LastEvaluatedShardId")
            if not start:
                break

    def _ready(self) -> list[_Shard]:
        """Shards to read now: not finished, and with their parent (if we know it) finished,
        so a key's changes reach the relay in order across a shard split."""
        ready = []
        for shard in self.shards.values():
            parent = self.shards.get(shard.parent) if shard.parent else None
            if not shard.done and (parent is None or parent.done):
                ready.append(shard)
        return ready

    # -- reading --

    def poll_once(self) -> bool:
        now = time.monotonic()
        if self.stream_arn is None or now >= self._next_describe:
            self.describe()
            self._next_describe = now + DESCRIBE_SECONDS
        busy = False
        for shard in self._ready():
            if shard.retry_at <= time.monotonic():
                busy = self._poll_shard(shard) or busy
        return busy

    def _iterator(self, shard: _Shard) -> str:
        assert self.stream_arn is not None
        args: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.id}
        if shard.retry_from is not None:
            args.update(ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=shard.retry_from)
        elif shard.checkpoint is not None:
            args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.checkpoint)
        else:
            args.update(ShardIteratorType="TRIM_HORIZON")
        return str(self.streams.get_shard_iterator(**args)["ShardIterator"])

    def _get_records(self, shard: _Shard) -> tuple[list[dict[str, Any]], str | None]:
        if shard.iterator is None:
            shard.iterator = self._iterator(shard)
        self._raw.body = None
        try:
            parsed = self.streams.get_records(
                ShardIterator=shard.iterator, Limit=shard.limit or self.relay.batch_size
            )
        except Exception as exc:
            # An iterator that expired (15 minutes), or that the endpoint forgot (restarted):
            # the next read asks for a new one from the checkpoint.
            shard.iterator = None
            code = error_code(exc)
            if code == "TrimmedDataAccessException":
                # DynamoDB Local answers this for a TRIM_HORIZON iterator on a shard that has
                # no record yet; elsewhere it means the records after the checkpoint are gone
                # (older than 24 h). Either way: from the oldest record there is, quietly.
                shard.checkpoint = shard.retry_from = None
                return [], ""
            if code == "ResourceNotFoundException":
                self.stream_arn = None
            raise
        body = self._raw.body
        wire = json.loads(body) if body else parsed
        records = [sharpen_creation_time(r, time.time()) for r in wire.get("Records", [])]
        return records, wire.get("NextShardIterator")

    def _poll_shard(self, shard: _Shard) -> bool:
        records, next_iterator = self._get_records(shard)
        if not records:
            if next_iterator != "":  # "": read again with a new iterator (see _get_records)
                shard.iterator = next_iterator
                shard.done = next_iterator is None
                if shard.done:
                    self._remember(shard)
            return False
        expired = self._expired(records)
        if expired:
            self._give_up(shard, records[:expired], "RecordAgeExceeded", 0, function_error=False)
            shard.iterator = None  # the rest is read again from after the expired ones
            return True
        failed_at, function_error = self._invoke(records)
        if failed_at is None:
            self._advance(shard, records, next_iterator)
            return True
        index = next(i for i, r in enumerate(records) if _sequence(r) == failed_at)
        if index:
            shard.checkpoint = _sequence(records[index - 1])
            self._remember(shard)
        if failed_at != shard.retry_from:
            shard.retry_from, shard.invocations = failed_at, 0
        shard.invocations += 1
        retries = shard.invocations - 1
        limit = self.relay.maximum_retry_attempts  # -1: no limit but the record's age
        if 0 <= limit <= retries:
            self._give_up(
                shard, records[index:], "RetryAttemptsExhausted", shard.invocations, function_error
            )
            self._advance(shard, records, next_iterator)
            return True
        if function_error:
            # BisectBatchOnFunctionError: the retry takes the first half of what failed, so a
            # record that makes the function crash is narrowed down rather than retried with
            # every record after it.
            shard.limit = max(1, (len(records) - index) // 2)
        delay = self.retry_delays[min(retries, len(self.retry_delays) - 1)]
        self.say(
            f"{self.name}: batch from sequence number {failed_at} failed; retry "
            f"{retries + 1}{f' of {limit}' if limit >= 0 else ''} in {delay:g} s"
        )
        shard.iterator = None  # the retry reads again from retry_from
        shard.retry_at = time.monotonic() + delay
        return False

    def _advance(
        self, shard: _Shard, records: Sequence[Mapping[str, Any]], nxt: str | None
    ) -> None:
        shard.checkpoint = _sequence(records[-1])
        shard.iterator = nxt
        shard.retry_from, shard.invocations, shard.retry_at, shard.limit = None, 0, 0.0, None
        shard.done = nxt is None
        self._remember(shard)

    def _remember(self, shard: _Shard) -> None:
        assert self.stream_arn is not None
        self.positions.put(self.stream_arn, shard.id, shard.checkpoint, shard.done)

    def _expired(self, records: Sequence[Mapping[str, Any]]) -> int:
        """How many records at the head of the batch are older than the mapping's maximum age."""
        oldest_allowed = time.time() - self.relay.maximum_record_age_seconds
        count = 0
        for record in records:
            created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
            if not isinstance(created, int | float) or created >= oldest_allowed:
                break
            count += 1
        return count

    def _invoke(self, records: Sequence[Mapping[str, Any]]) -> tuple[str | None, bool]:
        """Invoke the relay; return (the sequence number to retry from or None, whether the
        function itself failed)."""
        assert self.stream_arn is not None
        sequences = [_sequence(r) for r in records]
        try:
            answer = self.function(stream_event(records, self.stream_arn))
        except Exception:
            self.say(f"{self.name}: the handler raised; the whole batch failed")
            for line in traceback.format_exc().rstrip().splitlines():
                self.say(f"  {line}")
            return sequences[0], True
        failed = failed_items(answer, sequences)
        if failed is None:
            self.say(f"{self.name}: malformed batchItemFailures answer; the whole batch failed")
            return sequences[0], True
        return (failed[0] if failed else None), False

    def _give_up(
        self,
        shard: _Shard,
        records: Sequence[Mapping[str, Any]],
        condition: str,
        invocations: int,
        function_error: bool,
    ) -> None:
        """Send the batch's range to the failure queue; only once that worked does the shard
        move on (a failure queue that is down makes this raise, and the batch is read again)."""
        assert self.stream_arn is not None
        record = stream_failure_record(
            self.function,
            condition=condition,
            invocations=invocations,
            function_error=function_error,
            shard_id=shard.id,
            stream_arn=self.stream_arn,
            records=records,
        )
        if self._failure_queue_url is None:
            name = self.relay.failure_queue_name(self.stage)
            self._failure_queue_url = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
        try:
            self.sqs.send_message(QueueUrl=self._failure_queue_url, MessageBody=json.dumps(record))
        except Exception:
            self._failure_queue_url = None
            raise
        info = record["DDBStreamBatchInfo"]
        self.say(
            f"{self.name}: {condition}: {len(records)} record(s) "
            f"{info['startSequenceNumber']}..{info['endSequenceNumber']} of shard {shard.id} "
            f"sent to {self.relay.failure_queue_name(self.stage)}; moving on"
        )
        shard.checkpoint = _sequence(records[-1])
        shard.retry_from, shard.invocations, shard.retry_at, shard.limit = None, 0, 0.0, None
        self._remember(shard)


def _sequence(record: Mapping[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


class QueuePoller(Poller):
    """Lambda's SQS event source mapping for one subscription.

    Long-polls the queue (``WaitTimeSeconds`` 1), invokes the consumer with up to ten messages,
    then deletes every message the answer does not name in ``batchItemFailures``. A handler
    exception or a malformed answer deletes nothing. What is not deleted comes back after the
    queue's visibility timeout, and after ``maxReceiveCount`` receives SQS itself (moto's
    redrive, as AWS's) moves it to the dead-letter queue: the poller never counts.
    """

    def __init__(
        self,
        subscription: Subscription,
        function: Function,
        *,
        stage: str,
        sqs: Any,
        say: Say,
        wait_seconds: int = QUEUE_WAIT_SECONDS,
    ) -> None:
        super().__init__(subscription.handler, say)
        self.subscription = subscription
        self.function = function
        self.stage = stage
        self.sqs = sqs
        self.wait_seconds = wait_seconds
        self.url: str | None = None
        self.arn = ""

    def idle_seconds(self) -> float:
        return 0.0  # the long poll itself waited

    def _resolve(self) -> str:
        if self.url is None:
            url = str(
                self.sqs.get_queue_url(QueueName=self.subscription.queue_name(self.stage))[
                    "QueueUrl"
                ]
            )
            self.arn = queue_arn(self.sqs, url)
            self.url = url
        return self.url

    def poll_once(self) -> bool:
        url = self._resolve()
        try:
            received = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(self.subscription.batch_size, SQS_MAX_MESSAGES),
                WaitTimeSeconds=self.wait_seconds,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except Exception:
            self.url = None  # a restarted endpoint has new queue URLs, maybe: look again
            raise
        messages = received.get("Messages", [])
        if not messages:
            return False
        ids = [str(m["MessageId"]) for m in messages]
        keep = self._invoke([sqs_record(m, self.arn) for m in messages], ids)
        done = [m for m in messages if m["MessageId"] not in keep]
        self._delete(url, done)
        if keep:
            timeout = self.subscription.local_visibility_timeout_seconds
            self.say(
                f"{self.name}: {len(keep)} of {len(messages)} message(s) failed; they come back "
                f"after the visibility timeout ({timeout} s), and go to the dead-letter queue "
                f"after {self.subscription.max_receive_count} receives"
            )
        return True

    def _invoke(self, records: list[dict[str, Any]], ids: list[str]) -> set[str]:
        """Invoke the consumer; return the message ids to keep (the failed ones)."""
        try:
            answer = self.function({"Records": records})
        except Exception:
            self.say(f"{self.name}: the handler raised; no message of the batch is deleted")
            for line in traceback.format_exc().rstrip().splitlines():
                self.say(f"  {line}")
            return set(ids)
        failed = failed_items(answer, ids)
        if failed is None:
            self.say(f"{self.name}: malformed batchItemFailures answer; nothing is deleted")
            return set(ids)
        return set(failed)

    def _delete(self, url: str, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_MAX_MESSAGES):
            chunk = messages[start : start + SQS_MAX_MESSAGES]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            answer = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            for failure in answer.get("Failed", []):
                # The message comes back after its visibility timeout and is applied again,
                # which the consumer recognises by its event id.
                self.say(f"{self.name}: could not delete a handled message: {failure.get('Code')}")
