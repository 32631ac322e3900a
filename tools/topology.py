"""The events between the services, defined once: which table streams are relayed to the bus,
and which consumer subscribes to what, through which queue, with which retry settings.

Three things are built from these definitions and from nothing else:

* the CDK stacks: the bus stack and each service's relay and consumer resources
  (``infra/events.py``);
* the local wiring of ``make run`` and the integration tests (``tools.local.events``): the same
  bus, rules, queues, dead-letter queues and redrive on moto's server, and pollers that invoke
  the same handlers with Lambda's event shapes;
* the operator's dead-letter command (``tools.events``).

The event types and sources themselves are facts of the services' code (``svckit.events``),
used here by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from svckit import events
from tools.services import PRODUCT, USER, ServiceDef

PROJECT = events.PROJECT
# The bus's archive keeps every event for replay (EventBridge's StartReplay); consumers remember
# what they applied for longer (svckit.events.PROCESSED_RETENTION_SECONDS), so replaying any
# archived event applies nothing twice.
ARCHIVE_RETENTION_DAYS = 14
DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: the longest an operator has to look
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600  # a consumer down this long loses events: an alarm first
# The logical id, in each consumer's template, of the table that records applied events, and the
# setting that names it to the consumer function. Its schema is defined here once for every
# consumer (services.ServiceDef.resources adds it to a consumer's own resources).
PROCESSED_EVENTS_TABLE = "ProcessedEventsTable"
PROCESSED_EVENTS_TABLE_RESOURCE: dict[str, Any] = {
    "Type": "AWS::DynamoDB::Table",
    "DeletionPolicy": "Delete",
    "UpdateReplacePolicy": "Delete",
    "Properties": {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "event_id", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "event_id", "KeyType": "HASH"}],
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
    },
}
GENERATED_TABLE_SETTINGS = {PROCESSED_EVENTS_TABLE: events.PROCESSED_TABLE_SETTING}


def bus_name(stage: str) -> str:
    return f"{PROJECT}-{stage}"


def _dashed(service: ServiceDef) -> str:
    return service.name.replace("_", "-")


@dataclass(frozen=True)
class Relay:
    """A table stream relayed to the bus by a function of the table's own service."""

    service: ServiceDef
    handler: str  # the @app.on_dynamodb_record function in the service's app.py
    source: str  # the events' source, which the function's PutEvents permission is held to
    table: str = "Table"  # logical id in the service's resources.json
    batch_size: int = 100
    # Lambda's retries of a failing batch (halved each time with BisectBatchOnFunctionError).
    # -1 is AWS's "until the record expires": a relay that cannot publish (the bus is down, or
    # a record its code cannot map) holds its shard until it can, up to the record age below,
    # rather than discard the rest of the batch after a few tries (the outbox would lose
    # changes it stored). A held shard shows in the relay's IteratorAge alarm; after the age,
    # the batch's position goes to the failure queue and the shard moves on.
    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = 24 * 3600  # a stream keeps records 24 h anyway
    failure_queue: str = "RelayFailureQueue"  # logical id of the on-failure destination

    def failure_queue_name(self, stage: str) -> str:
        return f"{PROJECT}-{stage}-{_dashed(self.service)}-relay-failures"


@dataclass(frozen=True)
class Subscription:
    """A consumer's own queue, fed by a rule on the bus, drained by one of its functions."""

    service: ServiceDef
    handler: str  # the @app.on_sqs_message function in the service's app.py
    queue: str  # logical id of the queue in the service's template
    source: str  # the producer's events.source
    types: tuple[str, ...]  # the event types it applies
    batch_size: int = 10
    # tries before a message goes to the dead-letter queue; the consumer counts a failure on
    # the last one as dead-lettered, so a different value here makes that metric wrong
    max_receive_count: int = events.MAX_RECEIVE_COUNT
    # AWS asks for at least six times the function's timeout, so a message is never handed to a
    # second poller while the first is still working on it.
    visibility_timeout_seconds: int = 60
    # make run's queues: a failed message comes back after this, so that a poison message
    # reaches its dead-letter queue in seconds, not minutes. Local handlers run in milliseconds.
    local_visibility_timeout_seconds: int = 2
    # Whether the consumer reads its processed-events record before applying (svckit.events'
    # was_applied, for a change that cannot be one transaction with the record): its role then
    # needs GetItem on that table as well as PutItem. False for one that applies and records in
    # one transaction (apply_once, record_once), which is PutItem alone.
    checks_before_applying: bool = False

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}DeadLetters"

    @property
    def rule(self) -> str:
        return f"{self.queue}Rule"

    def queue_name(self, stage: str) -> str:
        return f"{PROJECT}-{stage}-{_dashed(self.service)}-{self.handler.replace('_', '-')}"

    def dead_letter_queue_name(self, stage: str) -> str:
        return f"{self.queue_name(stage)}-dlq"

    def rule_name(self, stage: str) -> str:
        return f"{self.queue_name(stage)}-rule"

    def event_pattern(self) -> dict[str, Any]:
        return {"source": [self.source], "detail-type": list(self.types)}


RELAYS = (
    Relay(USER, "relay_user_changes", events.USER_SOURCE),
    Relay(PRODUCT, "relay_product_changes", events.PRODUCT_SOURCE),
)
SUBSCRIPTIONS = (
    # user_api grants points for every product added.
    Subscription(
        USER, "on_product_events", "ProductEventsQueue", events.PRODUCT_SOURCE,
        (events.PRODUCT_ADDED,),
    ),
    # product_api removes a deleted account's products and refuses its tokens; the cascade is
    # many writes, so it checks the record first and records last.
    Subscription(
        PRODUCT, "on_user_events", "UserEventsQueue", events.USER_SOURCE, (events.USER_DELETED,),
        checks_before_applying=True,
    ),
)  # fmt: skip


def relays_of(service: ServiceDef) -> tuple[Relay, ...]:
    return tuple(r for r in RELAYS if r.service.name == service.name)


def subscriptions_of(service: ServiceDef) -> tuple[Subscription, ...]:
    return tuple(s for s in SUBSCRIPTIONS if s.service.name == service.name)


def generated_tables(service: ServiceDef) -> dict[str, dict[str, Any]]:
    """The tables the topology adds to ``service``: a processed-events table for a consumer."""
    if not subscriptions_of(service):
        return {}
    return {PROCESSED_EVENTS_TABLE: copy.deepcopy(PROCESSED_EVENTS_TABLE_RESOURCE)}
