"""DynamoDB access shared by the data-owning services.

One low-level client per process, made on first use (not at import, so moto's mocks and the
stage's environment apply), with short timeouts and the standard retry mode, which backs off on
throttling. The low-level client is used rather than ``boto3.resource`` because it imports
faster, which is cold-start time; boto3's own serializer does the marshalling.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError
from chalice import TooManyRequestsError

from svckit import config

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)


@functools.cache
def client() -> Any:
    return boto3.client(
        "dynamodb",
        config=Config(
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )


def table_name() -> str:
    """Every service names its own table in the stage's ``TABLE_NAME``."""
    return config.require("TABLE_NAME")


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def raise_if_throttled(exc: ClientError) -> None:
    """Turn DynamoDB throttling that survived the retries into the contract's 429."""
    if error_code(exc) in THROTTLING_CODES:
        raise TooManyRequestsError("the service is busy, retry after a short wait") from exc


# The one DynamoDB action each helper below performs: what a service's IAM policy must allow
# when its code calls the helper (the deploy tests hold each policy to exactly these).
HELPER_ACTIONS = {"put_new": "PutItem", "get": "GetItem", "scan_page": "Scan"}


class ItemExistsError(Exception):
    """A conditional insert found its key taken."""


def put_new(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Insert ``item`` only if its ``key`` is free: one conditional PutItem, so two racing
    writers cannot both win and the loser never overwrites the winner. Returns what was stored
    (``None`` values are left out, not written as nulls)."""
    try:
        client().put_item(
            TableName=table_name(),
            Item=to_item(item),
            ConditionExpression="attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": key},
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            raise ItemExistsError(item[key]) from exc
        raise_if_throttled(exc)
        raise
    return {k: v for k, v in item.items() if v is not None}


def get(key: Mapping[str, str]) -> dict[str, Any] | None:
    """One strongly consistent GetItem: readable as soon as the write that made it answered."""
    try:
        response = client().get_item(
            TableName=table_name(), Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True
        )
    except ClientError as exc:
        raise_if_throttled(exc)
        raise
    item = response.get("Item")
    return from_item(item) if item else None


def scan_page(
    limit: int,
    start_key: Mapping[str, str] | None,
    projection: str | None = None,
    names: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Scan page with ``Limit``, never the whole table; DynamoDB's order, stable across
    pages. Returns the items and the string key to continue from, if any remain."""
    kwargs: dict[str, Any] = {"TableName": table_name(), "Limit": limit}
    if projection:
        kwargs["ProjectionExpression"] = projection
    if names:
        kwargs["ExpressionAttributeNames"] = dict(names)
    if start_key:
        kwargs["ExclusiveStartKey"] = {k: {"S": v} for k, v in start_key.items()}
    try:
        response = client().scan(**kwargs)
    except ClientError as exc:
        raise_if_throttled(exc)
        raise
    items = [from_item(i) for i in response.get("Items", [])]
    last = response.get("LastEvaluatedKey")
    return items, ({k: v["S"] for k, v in last.items()} if last else None)
