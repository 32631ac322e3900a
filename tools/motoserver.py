"""moto's server mode as the local DynamoDB endpoint, with DynamoDB's write atomicity.

Two changes to stock ``python -m moto.server``, both so the local endpoint behaves like the real
one where this project depends on it:

* **Atomic conditional writes.** DynamoDB evaluates a write's condition and applies the write as
  one step per item; moto's server answers on threads and checks then writes without a lock, so
  two racing ``PutItem ... attribute_not_exists`` calls can both succeed (seen here: 20 parallel
  registrations of one name gave two 201s). Every write method of the DynamoDB backend is
  serialised by one lock. Reads stay concurrent. The code under test gains nothing from this: a
  read-then-write registration would still let two callers through, which is what the
  concurrency test exists to catch.
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

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

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


if __name__ == "__main__":
    make_writes_atomic()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    main(sys.argv[1:])
