"""How every AWS client in the services times out and retries: defined once, here, per stage.

The budget is set by what waits for the function. The gateway gives a service
:meth:`Budget.upstream_deadline` to answer, above the service's own worst case, so a service
always answers (if only with its 503) before the gateway gives up on it; a service's Lambda
timeout (10 s) is above both. On AWS, DynamoDB answers in milliseconds, so a second missing almost
always means a lost connection, which one retry fixes: tight values. Locally one DynamoDB Local
serves every service and the event workers, and a burst of writes queues there for seconds: the
local stage waits longer rather than time out work that is merely queued.

A retry re-sends a write whose first attempt may have been stored (the answer was lost, not the
request), so every write the services make is safe to repeat (``svckit.dynamo``): conditional
inserts recognise their own earlier attempt, increments run once per ``ClientRequestToken``.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import Any

from svckit import config, overload

# botocore's standard mode waits random(0, 1) * 2 ** (n - 1) seconds before its n-th retry.
_BACKOFF_BASE = 1.0
# What the gateway adds above a service's worst case before it gives up on the service.
_UPSTREAM_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class Budget:
    connect: float  # seconds to connect
    read: float  # seconds between bytes of the answer
    attempts: int  # the first try and the retries
    request: float  # seconds a request may go on starting AWS calls (its later ones are 503)

    @property
    def worst_case(self) -> float:
        """The longest one AWS call can take: every attempt timing out, and the backoffs."""
        backoff = sum(_BACKOFF_BASE * 2**n for n in range(self.attempts - 1))
        return self.attempts * (self.connect + self.read) + backoff

    @property
    def worst_request(self) -> float:
        """The longest a request can take in AWS calls: one started as its time runs out."""
        return self.request + self.worst_case

    @property
    def upstream_deadline(self) -> float:
        """The gateway's whole-call deadline for a service of this stage."""
        return self.worst_request + _UPSTREAM_MARGIN_SECONDS


# Every deployed stage is AWS; ``local`` is make run and the integration tests.
AWS = Budget(connect=0.5, read=1.0, attempts=2, request=2.0)
BUDGETS = {"local": Budget(connect=1.0, read=3.0, attempts=2, request=5.0)}
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "svckit_request_deadline", default=None
)


def start_request() -> contextvars.Token[float | None]:
    """The request's AWS calls may start until ``budget().request`` from now (svckit.web calls
    it around each HTTP request): a request of several slow calls then answers 503 before the
    gateway's deadline, instead of the gateway giving up while it still works."""
    return _deadline.set(time.monotonic() + budget().request)


def end_request(token: contextvars.Token[float | None]) -> None:
    _deadline.reset(token)


def out_of_time() -> bool:
    deadline = _deadline.get()
    return deadline is not None and time.monotonic() > deadline


def budget(stage: str | None = None) -> Budget:
    return BUDGETS.get(stage or config.current_stage(), AWS)


def client_config() -> Any:
    """botocore's ``Config`` for the stage's budget (botocore imported here: gateway_api reads
    the budget for its deadline and never makes an AWS client)."""
    from botocore.config import Config

    spent = budget()
    return Config(
        connect_timeout=spent.connect,
        read_timeout=spent.read,
        retries={"mode": "standard", "total_max_attempts": spent.attempts},
    )


def make_client(service: str, extra: Any = None, bounded: bool = True) -> Any:
    """A boto3 client on the stage's budget that tells :mod:`svckit.overload` which operation
    it is calling (a timeout names none) and, when ``bounded``, starts no call once the
    request's time is spent (bookkeeping that must still run then, such as removing an
    idempotency record, is not bounded). boto3 is imported here, on first use."""
    import boto3

    settings = client_config()
    made = boto3.client(service, config=settings.merge(extra) if extra else settings)
    made.meta.events.register("before-call", overload.remember_call)
    if bounded:
        made.meta.events.register("before-call", overload.refuse_late_call)
    return made
