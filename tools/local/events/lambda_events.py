"""The exact payloads Lambda builds for the services' event handlers: the DynamoDB stream event,
the SQS event, the on-failure record of a stream mapping, and how a handler's
``batchItemFailures`` answer is read. Data only: nothing here calls an endpoint.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tools.local import dynamodb

REGION = dynamodb.REGION
ACCOUNT = "000000000000"


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
