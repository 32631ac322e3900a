"""What the load did to the data, written by the locustfile and read by the data check.

Why a ledger rather than reading the tables afterwards: the check is about what *clients were
told*. A product answered 201 must be readable; a product whose write got no clear answer (a
502, a timeout, a user stopped mid-request) may or may not exist, and the points its creator
ends with depend on which. So every write is written down *before* it is sent (``PENDING``),
then moved to what its answer says; whatever is still pending at the end had an unknown
outcome, and the check finds out from the store.

Standard library only: the locust process and the runner both import it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A product's states, in the order a product moves through them.
PENDING = "pending"  # POST /add_product sent, no answer (yet)
CREATED = "created"  # answered 201
UNKNOWN = "unknown"  # answered something else, or never answered: stored or not, the store says
DELETING = "deleting"  # DELETE sent (from CREATED), no answer (yet)
DELETED = "deleted"  # answered 204
DELETE_UNKNOWN = "delete-unknown"  # the DELETE answered something else, or never answered

# States whose product was certainly stored at some point (and so earned its creator points).
STORED = frozenset({CREATED, DELETING, DELETED, DELETE_UNKNOWN})

# The environment variables through which the runner hands the locust process its ledger path
# and a run id (names unique to the run, so a reused system's older data never collides).
LEDGER_ENV = "LOAD_LEDGER"
RUN_ID_ENV = "LOAD_RUN_ID"


@dataclass
class Ledger:
    """Users that registered (and the one that did not), and every product write by id."""

    users: dict[str, bool] = field(default_factory=dict)  # username -> registered (201)
    products: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {user, state}

    def user(self, username: str, registered: bool) -> None:
        self.users[username] = registered

    def product(self, product_id: str, username: str, state: str) -> None:
        self.products[product_id] = {"user": username, "state": state}

    def state(self, product_id: str) -> str | None:
        entry = self.products.get(product_id)
        return entry["state"] if entry else None

    def finished(self) -> Ledger:
        """The ledger as the check reads it: a write still in flight became unknown."""
        done = {PENDING: UNKNOWN, DELETING: DELETE_UNKNOWN}
        return Ledger(
            dict(self.users),
            {
                pid: {"user": entry["user"], "state": done.get(entry["state"], entry["state"])}
                for pid, entry in self.products.items()
            },
        )

    def to_json(self) -> dict[str, Any]:
        return {"users": self.users, "products": self.products}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        return cls(dict(data.get("users", {})), dict(data.get("products", {})))

    def save(self, path: Path) -> None:
        """Atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump(self.finished().to_json(), out, indent=1, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Ledger:
        return cls.from_json(json.loads(path.read_text()))
