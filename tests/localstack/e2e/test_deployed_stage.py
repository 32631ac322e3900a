"""The deployed system, end to end, on a real LocalStack: what a user of `make deploy-localstack`
gets, exercised through the deployed gateway's URL the way a client would.

One stage is deployed once for the module (``deployed``, in conftest) with the project's own
make targets, and the tests run in file order against it: the walk-through, the events in both
directions, the operator's dead-letter view, each app's OpenAPI document as the stage serves it,
a second deploy that must change nothing, and a destroy that must leave nothing of the stage
behind. Each waits for asynchronous results by polling with a bound (events take seconds on
LocalStack), never by sleeping a fixed time.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.system import Reply, bearer, call, get, post, wait_until
from tools import events as events_cli
from tools.deployed import API_STAGE, Deployed
from tools.services import GATEWAY, PRODUCT, USER
from tools.stages import Naming

pytestmark = pytest.mark.localstack

EVENT_SECONDS = 30.0  # the bound for points and the cascade on LocalStack
SETTLE_SECONDS = 2.0
QUEUE_SECONDS = 15.0  # Lambda deletes a batch's messages just after the handler returns
PASSWORD = "correct-horse-1234"
COLD_SECONDS = 30.0  # a first call may start a function (and, for the gateway's document, two)
# Routes each deployed document must list (API.md's tables; the unit layer compares every route).
ROUTES = {
    GATEWAY.name: {"/register_user", "/login_user", "/add_product", "/get_products", "/health"},
    USER.name: {"/register", "/login", "/users", "/users/{username}", "/health"},
    PRODUCT.name: {"/products", "/get_products", "/products/{product_id}", "/health"},
}


def _register_and_login(gateway: str, username: str) -> str:
    registered = post(gateway, "/register_user", {"username": username, "password": PASSWORD})
    assert registered.status == 201, registered
    assert "password" not in registered.body.decode()
    login = post(gateway, "/login_user", {"username": username, "password": PASSWORD})
    assert login.status == 200, login
    assert login.json()["token_type"] == "Bearer"
    return str(login.json()["access_token"])


def _points(gateway: str, username: str) -> int:
    reply = get(gateway, f"/users/{username}")
    assert reply.status == 200, reply
    return int(reply.json()["points"])


def test_walkthrough_through_the_deployed_gateway(deployed: Deployed) -> None:
    gateway = deployed.gateway_url
    token = _register_and_login(gateway, deployed.walker)
    added = post(
        gateway,
        "/add_product",
        {"product_id": deployed.product_id, "product_name": "Laptop"},
        headers=bearer(token),
    )
    assert added.status == 201, added
    assert added.json()["product"]["created_by"] == deployed.walker
    assert added.header("X-Request-Id")

    listed = get(gateway, "/get_products")
    assert listed.status == 200, listed
    products = {p["product_id"]: p for p in listed.json()}
    assert products[deployed.product_id]["product_name"] == "Laptop"

    greeted = get(gateway, "/greet/John")
    assert greeted.status == 200, greeted
    assert greeted.body.decode() == "Hello, John!"


def test_points_arrive_for_the_added_product(deployed: Deployed) -> None:
    """ProductAdded: product_api's relay -> the bus -> user_api's queue -> its consumer."""
    points = wait_until(
        lambda: _points(deployed.gateway_url, deployed.walker) or None, EVENT_SECONDS, 0.5
    )
    assert points == 10
    time.sleep(SETTLE_SECONDS)  # a second delivery of the event, if any, has arrived by now
    assert _points(deployed.gateway_url, deployed.walker) == 10


def test_a_deleted_users_products_go(deployed: Deployed) -> None:
    """UserDeleted: user_api's relay -> the bus -> product_api's queue -> the cascade."""
    gateway = deployed.gateway_url
    leaver = f"leaver_{uuid.uuid4().hex[:8]}"
    token = _register_and_login(gateway, leaver)
    for n in range(3):
        added = post(
            gateway,
            "/products",
            {"product_name": f"thing {n}", "price": 1.5},
            headers=bearer(token),
        )
        assert added.status == 201, added
    mine = get(gateway, f"/products?created_by={leaver}")
    assert len(mine.json()) == 3, mine

    deleted = call(gateway, "DELETE", f"/users/{leaver}", headers=bearer(token))
    assert deleted.status == 204, deleted
    assert get(gateway, f"/users/{leaver}").status == 404

    def gone() -> bool:
        return get(gateway, f"/products?created_by={leaver}").json() == []

    wait_until(gone, EVENT_SECONDS, 0.5)
    # The walker's product was not swept along.
    kept = get(gateway, f"/products/{deployed.product_id}")
    assert kept.status == 200, kept


def test_no_dead_letters_and_nothing_left_to_apply(deployed: Deployed) -> None:
    """`make dlq` on the stage: every dead-letter queue is there and empty after the flows
    above, and so is every consumer queue (a message failing there would be dead-lettered only
    minutes later, after its receives: still in its queue now)."""
    wait_until(lambda: not any(deployed.queue_depths().values()), QUEUE_SECONDS, 0.5)
    out = io.StringIO()
    total = events_cli.list_dead_letters(deployed.sqs, deployed.stage, out)
    listing = out.getvalue()
    assert "not found" not in listing, listing
    assert total == 0, listing


def _fetch_document(url: str, host: str | None = None) -> dict[str, Any]:
    """``GET /openapi.json`` below ``url``, checked for what every app's document has."""
    reply = call(url, "GET", "/openapi.json", headers={"Host": host} if host else None,
                 timeout=COLD_SECONDS)  # fmt: skip
    assert reply.status == 200, reply
    document: dict[str, Any] = reply.json()
    assert str(document["openapi"]).startswith("3.1"), document["openapi"]
    return document


def _call_server(endpoint: str, server: str, path: str) -> Reply:
    """GET ``path`` below a document's server URL, connecting to ``endpoint`` with the server's
    host as ``Host`` (LocalStack's host-style name does not resolve offline; for the path-style
    URL the two are the same host)."""
    parts = urlsplit(server)
    return call(endpoint + parts.path, "GET", path, headers={"Host": parts.netloc},
                timeout=COLD_SECONDS)  # fmt: skip


@pytest.mark.parametrize("service", sorted(ROUTES))
def test_each_app_serves_its_document_with_the_stage_as_server(
    deployed: Deployed, service: str
) -> None:
    """The packaged app answers ``/openapi.json`` on API Gateway, and its ``servers`` entry is
    the URL this client reached the stage at (LocalStack's path-style ``/_aws/execute-api/<id>/
    <stage>``, which the Lambda event does not carry), so a client built from the document
    calls the deployed stage, not localhost."""
    url = deployed.api_urls[service]
    document = _fetch_document(url)
    assert ROUTES[service] <= set(document["paths"]), sorted(document["paths"])
    assert "get" in document["paths"]["/health"]
    assert document["servers"] == [{"url": url.rstrip("/")}]
    health = _call_server(deployed.endpoint, document["servers"][0]["url"], "/health")
    assert health.status == 200, health
    assert health.json()["service"] == service


def test_the_host_style_url_is_the_server_when_the_client_used_it(deployed: Deployed) -> None:
    """Reached as ``<id>.execute-api.localhost.localstack.cloud:<port>/<stage>``, the gateway
    names that URL: the document follows the caller's URL, not one fixed form."""
    api_id = deployed.api_ids[GATEWAY.name]
    url, host = deployed.host_style(api_id)
    document = _fetch_document(url, host)
    server = document["servers"][0]["url"]
    assert server == f"http://{host}/{API_STAGE}"
    health = _call_server(deployed.endpoint, server, "/health")
    assert health.status == 200, health
    assert health.json()["service"] == GATEWAY.name


def test_a_second_deploy_changes_nothing(deployed: Deployed) -> None:
    before = deployed.stack_states()
    deployed.deploy()
    after = deployed.stack_states()
    assert after == before
    # And the stage still answers.
    assert get(deployed.gateway_url, "/health").status == 200


def test_a_rotated_jwks_reaches_every_function(deployed: Deployed) -> None:
    """A key added to the stage's JWKS in SSM (the first step of a rotation) is deployed to
    every function: the stacks' JWKS parameter is [cdk:skip], so the deploy forces them when
    what they resolved differs from SSM's."""
    ssm = deployed.client("ssm")
    name = Naming(deployed.stage).jwks_parameter
    jwks = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    jwks["keys"].append({**jwks["keys"][0], "kid": "rotated-in-e2e"})
    ssm.put_parameter(Name=name, Value=json.dumps(jwks), Type="String", Overwrite=True)

    deployed.deploy()

    lambda_ = deployed.client("lambda")
    for function in deployed.functions():
        env = lambda_.get_function_configuration(FunctionName=function)["Environment"]
        assert "rotated-in-e2e" in env["Variables"]["JWT_JWKS"], function
    assert get(deployed.gateway_url, "/health").status == 200


def test_destroy_leaves_nothing_of_the_stage(deployed: Deployed) -> None:
    deployed.destroy()
    assert deployed.leftovers() == {}
