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
