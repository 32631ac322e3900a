"""moto's server mode as the local DynamoDB endpoint (the fallback) and the local EventBridge
and SQS, with DynamoDB's write atomicity and SQS receives that do not slow down with the queue.

Three changes to stock ``python -m moto.server``, each so the local endpoint behaves like the real
one where this project depends on it:

* **Atomic conditional writes.** DynamoDB evaluates a write's condition and applies the write as
  one step per item; moto's server answers on threads and checks then writes without a lock, so
  two racing ``PutItem ... attribute_not_exists`` calls can both succeed (seen here: 20 parallel
  registrations of one name gave two 201s). Every write method of the DynamoDB backend is
  serialised by one lock. Reads stay concurrent. The code under test gains nothing from this: a
  read-then-write registration would still let two callers through, which is what the
  concurrency test exists to catch.
* **A receive's cost does not grow with the queue.** moto 5.2.5 checks each message it hands
  out against the queue's retention period by computing *every* queue attribute, which counts
  every message: one ``ReceiveMessage`` of ten took 128 ms with 300 messages queued and 289 ms
  with 1,000, so after a burst the points consumer spent two thirds of its time waiting on
  moto (measured: 30 events a second). The retention check here reads the one attribute it needs.
* **Quiet.** The services log one JSON line per request; werkzeug's extra line for every
  DynamoDB call made ``make run``'s output mostly noise. Warnings and errors still show.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from moto.core.utils import unix_time
from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
from moto.sqs.models import Message, SQSBackend

WRITE_METHODS = ("put_item", "update_item", "delete_item", "transact_write_items")
_write_lock = threading.RLock()


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _write_lock:
            return method(*args, **kwargs)

    return locked


def make_writes_atomic() -> None:
    for name in WRITE_METHODS:
        setattr(DynamoDBBackend, name, _serialised(getattr(DynamoDBBackend, name)))


def _retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
    """moto's ``is_message_valid_based_on_retention_period``, with the same rule (kept while
    sent time + retention period is in the future), reading only the retention period."""
    retention = int(self.get_queue(queue_name).message_retention_period)
    return retention + message.sent_timestamp / 1000 > unix_time()


def make_receives_fast() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign]


if __name__ == "__main__":
    make_writes_atomic()
    make_receives_fast()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    main(sys.argv[1:])
