"""gateway_api: the single entry point (seeds 000-004).

It owns no data. Each view names the service and path that answer it and hands the request to
``chalicelib.upstream``, which passes the answer through unchanged or turns a failing service into
the contract's 502/503/504. Write routes verify the token here first, so a request that cannot
succeed never costs a service call; the service verifies it again, because it trusts no one.
Service URLs come only from the stage's environment (``.chalice/config.json``).
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from pathlib import Path
from typing import Any

from chalice import BadRequestError, Response

from chalicelib import upstream
from chalicelib.upstream import PRODUCT, USER, segment
from svckit import config, openapi, validation
from svckit.errors import ServiceUnavailableError, error_body
from svckit.web import Service

# Its write routes forward Idempotency-Key; the services they reach keep the records.
service = Service("gateway_api", Path(__file__).parent, keeps_idempotency_records=False)
app = service.app

GREET_NAME = validation.Text(1, 100, allow_blank=False)
DEFAULT_HEALTH_TIMEOUT = 2.0
# How long /health waits past its budget for a probe that overran it (name resolution, which no
# socket timeout covers, can hang); the probe is then reported as a timeout.
HEALTH_GRACE_SECONDS = 0.5


def service_documents() -> dict[str, Any]:
    """The documents of the services this gateway forwards to, for its own (svckit.openapi):
    their shapes are theirs, read from them rather than restated here. A service that does not
    answer makes this raise the contract's 503, and nothing is kept."""
    documents: dict[str, Any] = {}
    for target in upstream.UPSTREAMS:
        answer = upstream.call(service, target, "GET", openapi.ROUTE)
        if answer.status != 200:
            raise target.counted(target.unavailable())
        documents[target.name] = json.loads(answer.body)
    return documents


service.openapi.sources = service_documents


def _to(target: upstream.Upstream, path: str) -> Any:
    """The annotation of a route forwarded to ``target``'s ``path`` with the same method."""
    return openapi.describe(
        summary=f"{target.label}: {path}", answers={}, forwards=(target.name, path)
    )


# --- user_api -------------------------------------------------------------------------------


@app.route("/register_user", methods=["POST"])
@_to(USER, "/register")
def register_user() -> Response:
    return upstream.forward(service, USER, "/register")


@app.route("/login_user", methods=["POST"])
@_to(USER, "/login")
def login_user() -> Response:
    return upstream.forward(service, USER, "/login")


@app.route("/users", methods=["GET"])
@_to(USER, "/users")
def list_users() -> Response:
    return upstream.forward(service, USER, "/users")


@app.route("/users/{username}", methods=["GET"])
@app.route("/user/{username}", methods=["GET"])
@_to(USER, "/users/{username}")
def get_user(username: str) -> Response:
    return upstream.forward(service, USER, f"/users/{segment(username)}")


@app.route("/user/promote/{username}", methods=["PUT"])
@_to(USER, "/user/promote/{username}")
def promote_user(username: str) -> Response:
    service.require_principal()
    return upstream.forward(service, USER, f"/user/promote/{segment(username)}")


@app.route("/users/{username}/points", methods=["POST"])
@_to(USER, "/users/{username}/points")
def grant_points(username: str) -> Response:
    service.require_principal()
    return upstream.forward(service, USER, f"/users/{segment(username)}/points")


@app.route("/users/{username}", methods=["DELETE"])
@_to(USER, "/users/{username}")
def delete_user(username: str) -> Response:
    service.require_principal()
    return upstream.forward(service, USER, f"/users/{segment(username)}")


# --- product_api ----------------------------------------------------------------------------


@app.route("/add_product", methods=["POST"])
@_to(PRODUCT, "/add_product")
def add_product() -> Response:
    service.require_principal()
    return upstream.forward(service, PRODUCT, "/add_product")


@app.route("/get_products", methods=["GET"])
@_to(PRODUCT, "/get_products")
def get_products() -> Response:
    return upstream.forward(service, PRODUCT, "/get_products")


@app.route("/products", methods=["GET"])
@_to(PRODUCT, "/products")
def list_products() -> Response:
    return upstream.forward(service, PRODUCT, "/products")


@app.route("/products", methods=["POST"])
@_to(PRODUCT, "/products")
def create_product() -> Response:
    service.require_principal()
    return upstream.forward(service, PRODUCT, "/products")


@app.route("/products/{product_id}", methods=["GET"])
@_to(PRODUCT, "/products/{product_id}")
def get_product(product_id: str) -> Response:
    return upstream.forward(service, PRODUCT, f"/products/{segment(product_id)}")


@app.route("/products/{product_id}", methods=["DELETE"])
@_to(PRODUCT, "/products/{product_id}")
def delete_product(product_id: str) -> Response:
    service.require_principal()
    return upstream.forward(service, PRODUCT, f"/products/{segment(product_id)}")


# --- the gateway's own ----------------------------------------------------------------------

# What /health below answers: Service.health plus each service's probe result.
GATEWAY_HEALTH = openapi.Model(
    "GatewayHealth",
    {
        "type": "object",
        "required": ["status", "service", "time", "dependencies"],
        "properties": {
            "status": {"type": "string"},
            "service": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "dependencies": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}},
                },
            },
        },
    },
)


@app.route("/greet/{name}", methods=["GET"])
@openapi.describe(
    summary="Seed 004's greeting",
    answers={200: {"type": "string"}},
    text=True,
    path={"name": GREET_NAME},
)
def greet(name: str) -> Response:
    """Seed 004's greeting, answered here: no service owns it."""
    GREET_NAME.check("name", name)
    if not name.isprintable():
        raise BadRequestError("name must not contain control characters")
    return Response(
        body=f"Hello, {name}!",
        status_code=200,
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


@app.route("/health", methods=["GET"])
@openapi.describe(
    summary="The gateway's state and each service's readiness",
    answers={200: GATEWAY_HEALTH, 503: "a service is failing: the message names it"},
)
def health() -> Response:
    """The gateway's own state and every service's readiness, probed in parallel within a short
    budget (``HEALTH_TIMEOUT``) at ``UPSTREAM_HEALTH_PATH`` (``/health?ready=1``).

    503 names each failing service, so a probe (or a person) sees at once which one to look at.
    """
    budget = config.number("HEALTH_TIMEOUT", DEFAULT_HEALTH_TIMEOUT)
    request_id = service.request_id
    results: dict[str, dict[str, Any]] = {}

    def run(target: upstream.Upstream) -> None:
        results[target.name] = upstream.probe(service, target, request_id, budget)

    # A thread per probe, started now: each probe gets the whole budget however many checks run
    # at once. (A shared pool queued probes behind other checks' probes, and the queueing ate
    # the budget: healthy services were reported as timeouts under concurrent checks.) Two
    # threads per check is cheap next to the network calls they make, and /health is not the
    # hot path. A context copy per probe carries the request id onto the thread's log lines.
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(run, target),
            name=f"health-{target.name}",
            daemon=True,
        )
        for target in upstream.UPSTREAMS
    ]
    for thread in threads:
        thread.start()
    # Each probe bounds itself (its call's deadline); this bounds the wait even if one does not.
    waited_until = time.monotonic() + budget + HEALTH_GRACE_SECONDS
    for thread in threads:
        thread.join(max(0.0, waited_until - time.monotonic()))
    overran = {
        "status": "failing",
        "reason": "timeout",
        "latency_ms": round((budget + HEALTH_GRACE_SECONDS) * 1000, 2),
    }
    dependencies = {t.name: results.get(t.name, overran) for t in upstream.UPSTREAMS}
    body: dict[str, Any] = {**service.health(), "dependencies": dependencies}
    failing = [t.label for t in upstream.UPSTREAMS if dependencies[t.name]["status"] != "ok"]
    if not failing:
        return Response(body=body, status_code=200)
    verb = "is" if len(failing) == 1 else "are"
    error = ServiceUnavailableError(f"{' and '.join(failing)} {verb} unavailable")
    body.update(status="degraded", **error_body(error))
    return Response(body=body, status_code=503)
