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

One module per concern, as serverless-offline lays out its event sources (``src/events/<source>/``
with ``lambda-events/`` building the exact payloads):

* ``broker``: moto's bus and queues, the clients, ``wire`` and ``wire_when_ready``;
* ``lambda_events``: the payloads Lambda builds (stream and SQS records, failure records) and
  how a ``batchItemFailures`` answer is read;
* ``poller``: the thread loop every poller shares, and its trouble reporting;
* ``stream``: ``StreamPoller`` and ``Positions`` (the stream mapping and its checkpoints);
* ``queue``: ``QueuePoller`` (the SQS mapping).

Every name the modules define that callers use is importable from here too
(``from tools.local import events``), so callers need not know the layout.
"""

from __future__ import annotations

from tools.local.events.broker import (
    DEFAULT_PORT,
    EVENTS,
    FAKE_CREDENTIALS,
    MISSING_QUEUE_CODES,
    PORT_ENV,
    REGION,
    EventsUnavailable,
    client,
    ensure_queue,
    error_code,
    queue_arn,
    wire,
    wire_when_ready,
)
from tools.local.events.lambda_events import (
    ACCOUNT,
    Context,
    Function,
    Handler,
    failed_items,
    sharpen_creation_time,
    sqs_record,
    stream_event,
    stream_failure_record,
)
from tools.local.events.poller import ERROR_BACKOFF_SECONDS, REPEAT_ERROR_SECONDS, Poller, Say
from tools.local.events.queue import QUEUE_WAIT_SECONDS, SQS_MAX_MESSAGES, QueuePoller
from tools.local.events.stream import (
    DESCRIBE_SECONDS,
    STREAM_IDLE_POLL_SECONDS,
    STREAM_POLL_SECONDS,
    STREAM_RETRY_DELAYS,
    Positions,
    StreamPoller,
)

__all__ = [
    "ACCOUNT",
    "DEFAULT_PORT",
    "DESCRIBE_SECONDS",
    "ERROR_BACKOFF_SECONDS",
    "EVENTS",
    "FAKE_CREDENTIALS",
    "MISSING_QUEUE_CODES",
    "PORT_ENV",
    "QUEUE_WAIT_SECONDS",
    "REGION",
    "REPEAT_ERROR_SECONDS",
    "SQS_MAX_MESSAGES",
    "STREAM_IDLE_POLL_SECONDS",
    "STREAM_POLL_SECONDS",
    "STREAM_RETRY_DELAYS",
    "Context",
    "EventsUnavailable",
    "Function",
    "Handler",
    "Poller",
    "Positions",
    "QueuePoller",
    "Say",
    "StreamPoller",
    "client",
    "ensure_queue",
    "error_code",
    "failed_items",
    "queue_arn",
    "sharpen_creation_time",
    "sqs_record",
    "stream_event",
    "stream_failure_record",
    "wire",
    "wire_when_ready",
    "worker_name",
]


def worker_name(service_name: str) -> str:
    """``user_api`` -> ``user_worker``: the worker program's name and output prefix."""
    return f"{service_name.removesuffix('_api')}_worker"
