"""Lambda's DynamoDB stream event source mapping: ``StreamPoller`` reads a table's stream and
invokes the service's relay; ``Positions`` keeps where each shard's reading got to.

A stream batch is retried from the first failed record up to the relay's
``maximum_retry_attempts`` and then recorded in the failure queue, as Lambda's on-failure
destination. ``BisectBatchOnFunctionError`` halves the batch that is retried after a function
error, but the second half is then read as part of the next full batch rather than retried on
its own; there is one poller thread per shard walk, never several in parallel.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.local.events.broker import error_code
from tools.local.events.lambda_events import (
    Function,
    failed_items,
    sharpen_creation_time,
    stream_event,
    stream_failure_record,
)
from tools.local.events.poller import Poller, Say
from tools.topology import Relay

# The idle poll interval of a stream: a change reaches its relay within this much (plus one
# GetRecords, a few milliseconds locally). Each empty GetRecords costs DynamoDB Local CPU:
# measured idle, two relays at 0.15 s kept it at 8% of a core (2% without the events; 12% at
# 0.1 s), the two workers at 2% each.
STREAM_POLL_SECONDS = 0.15
# A stream with nothing new is polled less and less often, up to this (Lambda polls a shard
# about four times a second). With two relays at 0.15 s, DynamoDB Local idled at 2-6% of a core
# in 2 s windows on a quiet machine and read 7% once beside a test run: too close to the 5% an
# idle system may cost. The first change after a quiet spell reaches its relay within this much;
# the next ones at the busy pace again.
STREAM_IDLE_POLL_SECONDS = 0.5
IDLE_GROWTH = 1.5
# How often a stream poller looks again for a new stream (a table made again, as a restarted
# moto engine does) and new shards.
DESCRIBE_SECONDS = 2.0
# A failing stream batch waits before its next try, doubling up to the cap: a short outage (the
# events program restarting) is outlasted before the retries run out, as Lambda's are.
STREAM_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


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
    """Where each shard's reading got to, in a JSON file, as Lambda's event source mapping keeps
    its checkpoint across deployments of the function and restarts of anything else. With
    DynamoDB Local's data on disk the runner keeps the file beside that data (``make wipe``
    removes both), so a restart of ``make run`` resumes where the relays were instead of
    publishing the whole retained stream again. Keyed by stream ARN: a table made again has a
    new stream (its ARN names the creation time), which is read from its start, and the old
    stream's entries are dropped when the new one is found.
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

    def forget_other_streams(self, stream_arn: str) -> None:
        """Drop the positions of the table's earlier streams (``.../stream/<time>`` with another
        time): they can never be read again, and would only grow the file."""
        table = stream_arn.rsplit("/stream/", 1)[0] + "/stream/"
        with self._lock:
            stale = [arn for arn in self._data if arn.startswith(table) and arn != stream_arn]
            for arn in stale:
                del self._data[arn]
            if stale:
                self._write()

    def put(self, stream_arn: str, shard_id: str, checkpoint: str | None, done: bool) -> None:
        if self.path is None:
            return
        with self._lock:
            self._data.setdefault(stream_arn, {})[shard_id] = {
                "checkpoint": checkpoint,
                "done": done,
            }
            self._write()

    def _write(self) -> None:
        """Written whole and renamed: a worker killed mid-write leaves the old file."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    Where each shard got to is kept in ``positions`` (a file the runner names, kept with the
    table's data), so a worker restarted within a run, or a ``make run`` restarted after a
    graceful stop, goes on from there; without one, or with a fresh one, the stream is read from
    its trim horizon, which loses nothing and publishes again what was published before (the
    consumers are meant to apply an event id once).
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
        idle_poll_seconds: float = STREAM_IDLE_POLL_SECONDS,
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
        self.idle_poll_seconds = max(poll_seconds, idle_poll_seconds)
        self._quiet_polls = 0  # empty polls in a row
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
        wait = min(self.poll_seconds * IDLE_GROWTH**self._quiet_polls, self.idle_poll_seconds)
        self._quiet_polls += 1
        return wait

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
            self.positions.forget_other_streams(arn)
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
        if busy:
            self._quiet_polls = 0
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
