"""The real endpoints the event plumbing's tests run against (moto's server for EventBridge and
SQS, the local DynamoDB engine; one pair a module), their clients, a stage wired from the
topology, and a table with a stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import endpoints
from tools import topology
from tools.local import events as local_events


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    with endpoints.events_server() as events_url, endpoints.dynamodb_server() as dynamodb_url:
        yield events_url, dynamodb_url


@pytest.fixture
def aws(servers: tuple[str, str]) -> dict[str, Any]:
    return endpoints.clients(*servers)


@pytest.fixture
def stage(aws: dict[str, Any]) -> str:
    """A stage of its own, wired from the topology: its queues are this test's alone."""
    name = f"t{uuid.uuid4().hex[:8]}"
    created = local_events.wire(aws["sqs"], aws["events"], name)
    assert topology.SUBSCRIPTIONS[0].queue_name(name) in created
    return name


@pytest.fixture
def table(aws: dict[str, Any]) -> str:
    """A table of its own with a stream (see ``endpoints.create_stream_table``)."""
    name = f"stream-{uuid.uuid4().hex[:8]}"
    endpoints.create_stream_table(aws["dynamodb"], name)
    return name
