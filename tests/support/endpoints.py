"""Real local endpoints for tests of the event plumbing: moto's server for EventBridge and SQS,
and the DynamoDB engine ``make run`` would choose (DynamoDB Local in memory, or moto where it
cannot run), each a child process on a free port, as the runner starts them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import boto3

from tools.local import dynamodb
from tools.local import events as local_events
from tools.local.process import HOST, Child, free_port

T = TypeVar("T")
READY_SECONDS = 60.0


def _until_ready(probe: Callable[[], T], child: Child) -> T:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            return probe()
        except Exception:
            if not child.running or time.monotonic() > deadline:
                raise AssertionError(f"{child.name} did not come up:\n{child.tail()}") from None
            time.sleep(0.1)


@contextmanager
def events_server() -> Iterator[str]:
    """moto's server as ``make run`` starts it for EventBridge and SQS; yields its URL."""
    port = free_port()
    child = Child(
        "events",
        [sys.executable, "-m", "tools.motoserver", "-H", HOST, "-p", str(port)],
        dict(os.environ),
    )
    endpoint = f"http://{HOST}:{port}"
    try:
        _until_ready(lambda: local_events.client("sqs", endpoint).list_queues(), child)
        yield endpoint
    finally:
        child.stop()


@contextmanager
def dynamodb_server() -> Iterator[str]:
    """The DynamoDB engine ``make run`` would pick here, in memory; yields its URL."""
    engine = dynamodb.choose(data_dir=None, say=lambda _: None)
    port = free_port()
    child = Child("dynamodb", engine.argv(sys.executable, HOST, port), dict(os.environ))
    endpoint = f"http://{HOST}:{port}"
    try:
        _until_ready(lambda: dynamodb.client(endpoint).list_tables(), child)
        yield endpoint
    finally:
        child.stop()


def clients(events_endpoint: str, dynamodb_endpoint: str) -> dict[str, Any]:
    return {
        "sqs": local_events.client("sqs", events_endpoint),
        "events": local_events.client("events", events_endpoint),
        "dynamodb": local_events.client("dynamodb", dynamodb_endpoint),
        "streams": local_events.client("dynamodbstreams", dynamodb_endpoint),
    }


def create_stream_table(dynamodb_client: Any, name: str) -> None:
    """A table keyed by the string ``k``, with a stream of new and old images: what the stream
    pollers' tests read."""
    dynamodb_client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def put_keys(dynamodb_client: Any, table: str, *keys: str) -> None:
    """One row a key in a :func:`create_stream_table` table (with a binary and a number
    attribute, so the stream carries more than strings), in that order."""
    for key in keys:
        dynamodb_client.put_item(
            TableName=table, Item={"k": {"S": key}, "blob": {"B": key.encode()}, "n": {"N": "1"}}
        )


def local_client(service: str, endpoint: str) -> Any:
    """A plain boto3 client (botocore's own retries and timeouts, unlike
    ``tools.local.events.client``) of a local endpoint, with the local system's fake
    credentials."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
