"""Fixtures every test layer shares: a clean AWS environment, local keys, moto-backed tables."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from svckit import dynamo, keys
from tests.support.apps import load_app
from tools import services

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no endpoint override: nothing a test does can reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture(scope="session")
def local_keys() -> Path:
    """The local stage's keys, made where its config points, exactly as ``make run`` makes them."""
    keys.ensure_local_keys(services.KEYS_DIR)
    return services.KEYS_DIR


@pytest.fixture
def tables(local_keys: Path) -> Iterator[Any]:
    """moto's in-process DynamoDB with every service's local-stage table, built from its
    ``resources.json``; a fresh client is made inside the mock."""
    # Keeping boto3's default session across tests keeps botocore's parsed service models, which
    # moto would otherwise make every client re-read from JSON (0.4 s a test). The environment
    # above is the same fake one for every test, so nothing real can leak between them.
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        dynamo.client.cache_clear()
        dynamo.records_client.cache_clear()
        ddb = boto3.client("dynamodb", region_name=REGION)
        services.create_tables(ddb, "local")
        yield ddb
        dynamo.client.cache_clear()
        dynamo.records_client.cache_clear()


@pytest.fixture
def dynamo_calls(tables: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every DynamoDB call the app makes, as (operation, parameters), in order."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    for made in (dynamo.client(), dynamo.records_client()):
        made.meta.events.register("before-parameter-build.dynamodb", record)
    return calls


def _client(service: services.ServiceDef) -> Client:
    module = load_app(service)
    return Client(module.app, stage_name="local", project_dir=str(service.directory))


@pytest.fixture
def user_client(tables: Any) -> Iterator[Client]:
    with _client(services.USER) as client:
        yield client


@pytest.fixture
def product_client(tables: Any) -> Iterator[Client]:
    with _client(services.PRODUCT) as client:
        yield client


@pytest.fixture
def gateway_client(local_keys: Path) -> Iterator[Client]:
    with _client(services.GATEWAY) as client:
        yield client


JSON = {"Content-Type": "application/json"}


def post_json(client: Client, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return client.http.post(path, headers={**JSON, **(headers or {})}, body=json.dumps(body))


@pytest.fixture
def register(user_client: Client) -> Callable[..., Any]:
    def _register(
        username: str = "john_doe", password: str = "correct-horse-1234", **extra: Any
    ) -> Any:
        return post_json(
            user_client, "/register", {"username": username, "password": password, **extra}
        )

    return _register


@pytest.fixture
def login(user_client: Client) -> Callable[..., str]:
    def _login(username: str = "john_doe", password: str = "correct-horse-1234") -> str:
        response = post_json(user_client, "/login", {"username": username, "password": password})
        assert response.status_code == 200, response.body
        return str(response.json_body["access_token"])

    return _login


@pytest.fixture
def admin_token(register: Callable[..., Any], login: Callable[..., str], tables: Any) -> str:
    """An admin made the only way there is: an operator grants the role, then the user logs in."""
    from tools import admin

    register("boss", "boss-password-1")
    users_table = services.USER.stage_env("local")["TABLE_NAME"]
    assert admin.grant_role(tables, users_table, "boss", "admin")
    return login("boss", "boss-password-1")


@pytest.fixture
def issue_token(local_keys: Path) -> Callable[..., str]:
    """Sign a token with the local stage key, for services that only verify."""
    from svckit.tokens import TokenIssuer

    issuer = TokenIssuer((local_keys / keys.SIGNING_KEY_FILE).read_text(), ttl_seconds=3600)
    return functools.partial(issuer.issue)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def published(tables: Any) -> Callable[[], list[dict[str, Any]]]:
    """The local stage's bus on moto's in-process EventBridge, with a rule sending every event
    of the project to a queue; calling the result drains that queue and returns the envelopes
    (each event's ``detail``) in the order they were published."""
    from svckit import events

    bus = services.USER.stage_env("local")[events.BUS_SETTING]
    eventbridge = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    eventbridge.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName="captured-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    pattern = {"source": [{"prefix": f"{events.PROJECT}."}]}
    eventbridge.put_rule(Name="capture", EventBusName=bus, EventPattern=json.dumps(pattern))
    eventbridge.put_targets(
        Rule="capture",
        EventBusName=bus,
        Targets=[{"Id": "capture", "Arn": arn["Attributes"]["QueueArn"]}],
    )
    events.events_client.cache_clear()  # type: ignore[attr-defined]

    def drain() -> list[dict[str, Any]]:
        found = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
            messages = batch.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                body = json.loads(message["Body"])
                assert body["source"] == body["detail"]["source"]
                assert body["detail-type"] == body["detail"]["type"]
                found.append(body["detail"])
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return drain
