"""The in-memory broker ``make run``'s events go through: EventBridge and SQS from moto's server
(``events``, port 5102), wired from ``tools.topology`` and nothing else.

``wire`` creates what the deploy's templates create: the stage's bus, each subscription's
dead-letter queue, its queue (``RedrivePolicy`` with the subscription's ``maxReceiveCount``, the
*local* visibility timeout so a poison message reaches its DLQ in seconds) and its rule and
target, and each relay's failure queue. moto keeps all of it in memory, so the runner wires again
whenever that program restarts (as it creates tables again after an engine restart).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from tools import topology
from tools.local import dynamodb
from tools.local.process import once_answering

EVENTS = "events"  # the moto program's name and output prefix
DEFAULT_PORT = 5102  # beside DynamoDB (5100) and the metrics (5101)
PORT_ENV = "EVENTS_PORT"
REGION = dynamodb.REGION
FAKE_CREDENTIALS = dynamodb.FAKE_CREDENTIALS


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
    sqs, events = client("sqs", endpoint), client("events", endpoint)
    return once_answering(
        lambda: wire(sqs, events, stage), endpoint=endpoint, program="events endpoint",
        deadline=deadline, alive=alive, unavailable=EventsUnavailable,
    )  # fmt: skip
