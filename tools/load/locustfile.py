"""The users ``make load`` simulates, for ``locust -f tools/load/locustfile.py``.

``MixUser`` is a client of our gateway the way API.md's readers use it: it registers and logs
in, then mostly lists products and reads single ones, sometimes adds a product (with an
``Idempotency-Key``, a new uuid per intended write, reused only for the one retry that API.md
allows on a 503/429), sometimes reads a user, and now and then deletes one of its own products.
Before its random mix each user walks every route once, so even a run of two users for a few
seconds (the integration test) exercises the whole mix.

``SeedUser`` is seed 000's client: register, log in, add products, list them; the only routes
the naive peer (``../shared/peer_flask``) has, so the same users can run against both systems.
The peer's login gives no token and its ``/add_product`` wants none: the user sends one only
when it has one. Its think time is shorter than MixUser's, so the comparison is about what each
system can take rather than how fast users click.

Every write goes into a ``Ledger`` (``tools.load.ledger``) before it is sent and is moved to
what its answer says; the ledger is saved when locust quits, for the data check.

Only 127.0.0.1 (or ``localhost``/``::1``) is ever a target: locust refuses to start otherwise.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.exception import StopUser

from tools.load.ledger import (
    CREATED,
    DELETE_UNKNOWN,
    DELETED,
    DELETING,
    LEDGER_ENV,
    PENDING,
    RUN_ID_ENV,
    UNKNOWN,
    Ledger,
)
from tools.load.routes import ADD, LIST, LOGIN, PRODUCT, REGISTER, USER

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
PASSWORD = "load-password-1234"  # noqa: S105 (the simulated users' own, on a local store)
RUN_ID = os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex[:6]
# How long to wait before the one retry of a write answered 503/429 (its Retry-After, capped
# so a long Retry-After cannot stall a user for most of a short run).
MAX_RETRY_AFTER_SECONDS = 2.0

# Shared by every simulated user of this process (locust runs them as greenlets of one
# process, so plain structures need no lock: a greenlet only yields inside I/O).
LEDGER = Ledger()
LIVE_PRODUCTS: list[str] = []  # ids answered 201 and not (being) deleted: what readers pick from
REGISTERED: list[str] = []  # usernames that registered: what GET /users/{u} picks from
_numbers = itertools.count(1)


@events.init.add_listener
def _only_loopback(environment: Environment, **_: Any) -> None:
    """Refuse any target but this machine: a load test pointed elsewhere by a typo is an
    attack on someone's service."""
    host = urlsplit(environment.host or "").hostname
    if host not in LOOPBACK:
        raise SystemExit(f"tools/load/locustfile.py: refusing target {environment.host!r}: "
                         "only http://127.0.0.1:<port> is allowed")  # fmt: skip


@events.quitting.add_listener
def _save_ledger(**_: Any) -> None:
    """The ledger for the data check, once every user has stopped."""
    path = os.environ.get(LEDGER_ENV)
    if path:
        LEDGER.save(Path(path))


def _retry_after(response: Any) -> float:
    try:
        seconds = float(response.headers.get("Retry-After") or 1)
    except (TypeError, ValueError):
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class _Client(FastHttpUser):
    """Registration, login and adding a product, the part both profiles share."""

    abstract = True
    # The gateway answers within its own deadline; this only catches a server that hangs.
    network_timeout = 30.0
    connection_timeout = 10.0

    username = ""
    auth: dict[str, str] | None = None

    def on_start(self) -> None:
        self.username = f"ld_{RUN_ID}_{next(_numbers)}"
        self.auth = None
        self.mine: list[str] = []
        account = {"username": self.username, "password": PASSWORD}
        registered = self.client.post(REGISTER, json=account, name=REGISTER)
        LEDGER.user(self.username, registered.status_code == 201)
        if registered.status_code != 201:
            raise StopUser()  # counted as a failure by locust; this user has no account
        REGISTERED.append(self.username)
        login = self.client.post(LOGIN, json=account, name=LOGIN)
        if login.status_code != 200:
            raise StopUser()
        token = _json(login).get("access_token")
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    def add_product(self) -> None:
        """One intended write: a new id and a new Idempotency-Key, and at most one retry of
        the same request when the service says it was overloaded and when to come back."""
        product_id = f"ld-{RUN_ID}-{uuid.uuid4().hex[:12]}"
        body = {"product_id": product_id, "product_name": f"Load product {product_id[-6:]}"}
        headers = {**(self.auth or {}), "Idempotency-Key": str(uuid.uuid4())}
        LEDGER.product(product_id, self.username, PENDING)
        response = self.client.post(ADD, json=body, headers=headers, name=ADD)
        if response.status_code in (429, 503):
            self._sleep(_retry_after(response))
            response = self.client.post(ADD, json=body, headers=headers, name=ADD)
        if response.status_code == 201:
            LEDGER.product(product_id, self.username, CREATED)
            LIVE_PRODUCTS.append(product_id)
            self.mine.append(product_id)
        else:
            LEDGER.product(product_id, self.username, UNKNOWN)

    def list_products(self) -> None:
        self.client.get(LIST, name=LIST)

    def _sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)  # yields to the other users, as locust's own waits do


class MixUser(_Client):
    """Our gateway's realistic mix (the weights): mostly reads, some writes, few deletes."""

    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        super().on_start()
        # One walk through every route (two adds, so that one can be deleted and one stays).
        self.add_product()
        self.add_product()
        self.list_products()
        self.read_product()
        self.read_user()
        self.delete_product()

    @task(10)
    def list_products(self) -> None:
        super().list_products()

    @task(8)
    def read_product(self) -> None:
        if not LIVE_PRODUCTS:
            self.list_products()
            return
        product_id = random.choice(LIVE_PRODUCTS)  # noqa: S311 (a pick, not a secret)
        with self.client.get(f"/products/{product_id}", name=PRODUCT, catch_response=True) as r:
            if r.status_code == 200:
                r.success()
            elif r.status_code == 404 and LEDGER.state(product_id) in (
                DELETING,
                DELETED,
                DELETE_UNKNOWN,
            ):
                r.success()  # its creator deleted it after we picked it
            else:
                r.failure(f"GET {PRODUCT} answered {r.status_code}")

    @task(3)
    def add(self) -> None:
        self.add_product()

    @task(2)
    def read_user(self) -> None:
        username = random.choice(REGISTERED) if REGISTERED else self.username  # noqa: S311
        self.client.get(f"/users/{username}", name=USER)

    @task(1)
    def delete_product(self) -> None:
        """Delete one of this user's own products, the oldest, keeping the newest for reads."""
        if len(self.mine) < 2:
            self.add_product()
            return
        product_id = self.mine.pop(0)
        if product_id in LIVE_PRODUCTS:
            LIVE_PRODUCTS.remove(product_id)  # readers stop picking it before it goes
        LEDGER.product(product_id, self.username, DELETING)
        headers = {**(self.auth or {}), "Idempotency-Key": str(uuid.uuid4())}
        response = self.client.delete(f"/products/{product_id}", headers=headers, name=PRODUCT)
        if response.status_code in (429, 503):
            self._sleep(_retry_after(response))
            response = self.client.delete(f"/products/{product_id}", headers=headers, name=PRODUCT)
        LEDGER.product(
            product_id, self.username, DELETED if response.status_code == 204 else DELETE_UNKNOWN
        )


class SeedUser(_Client):
    """Seed 000's client: four lists to one add, with little think time."""

    wait_time = between(0.05, 0.25)

    @task(4)
    def list_products(self) -> None:
        super().list_products()

    @task(1)
    def add(self) -> None:
        self.add_product()


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
