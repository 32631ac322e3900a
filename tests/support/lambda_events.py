"""Lambda events built by hand, in the shapes Lambda's event source mappings deliver: a DynamoDB
stream batch (DynamoDB JSON images) and an SQS batch (EventBridge events as bodies).

Every record gets a real, distinct id (a stream ``eventID`` and ``SequenceNumber``, an SQS
``messageId``); a test that wants a duplicate passes the same record twice.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from svckit import events

REGION = "us-east-1"
_serializer = TypeSerializer()
_sequence = itertools.count(100_000_000_000_000_000_000)


def _image(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def stream_record(
    name: str,
    keys: Mapping[str, Any],
    new: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
    table: str = "table",
    by_ttl: bool = False,
) -> dict[str, Any]:
    """One DynamoDB stream record as Lambda hands it over (``eventName`` INSERT, MODIFY or
    REMOVE); ``by_ttl`` marks a removal DynamoDB made itself on expiry."""
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": time.time(),
        "Keys": _image(keys),
        "SequenceNumber": str(next(_sequence)),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = _image(new)
    if old is not None:
        dynamodb["OldImage"] = _image(old)
    record: dict[str, Any] = {
        "eventID": uuid.uuid4().hex,
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": dynamodb,
        "eventSourceARN": f"arn:aws:dynamodb:{REGION}:123456789012:table/{table}/stream/x",
    }
    if by_ttl:
        record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return record


def stream_event(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"Records": list(records)}


def envelope(
    kind: str, data: Mapping[str, Any], source: str, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": kind,
        "version": events.SCHEMA_VERSION,
        "source": source,
        "time": "2026-11-22T01:00:00.000Z",
        "data": dict(data),
    }


def eventbridge_body(detail: Mapping[str, Any]) -> str:
    """What an EventBridge rule's SQS target receives: the event, our envelope as its detail."""
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail.get("type"),
            "source": detail.get("source"),
            "account": "123456789012",
            "time": "2026-11-22T01:00:00Z",
            "region": REGION,
            "resources": [],
            "detail": detail,
        }
    )


def sqs_record(body: str, receive_count: int = 1) -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now,
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": now,
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:queue",
        "awsRegion": REGION,
    }


def sqs_event(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"Records": list(records)}


def failed_ids(answer: Mapping[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in answer["batchItemFailures"]]
