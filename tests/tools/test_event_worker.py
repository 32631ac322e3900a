"""The event worker process (``python -m tools.local.eventworker``) with a throwaway Chalice app
as its handler host: it loads the app as the devserver does (the stage's environment applied),
finds the service's handlers by the topology's names, polls with the endpoints the runner's
environment names, and stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import endpoints
from tools import services, topology
from tools.local import events as local_events
from tools.local.process import Child

STAGE = "local"
TABLE = "tiny-users"

APP = """
import json
import os

from chalice import Chalice

app = Chalice(app_name="tiny")


@app.on_dynamodb_record(stream_arn="arn:aws:dynamodb:us-east-1:000000000000:table/x/stream/0")
def relay_user_changes(event, context=None):
    keys = [record.keys["k"]["S"] for record in event]
    print("RELAYED " + json.dumps(keys) + " table=" + os.environ["TABLE_NAME"], flush=True)
    return {"batchItemFailures": []}


@app.on_sqs_message(queue_arn="arn:aws:sqs:us-east-1:000000000000:x")
def on_product_events(event):
    print("CONSUMED " + json.dumps([record.body for record in event]), flush=True)
    return {"batchItemFailures": []}
"""


# servers (moto's and the DynamoDB engine, one pair a module): tests/tools/conftest.py


@pytest.fixture
def tiny_app(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    (folder / ".chalice").mkdir(parents=True)
    (folder / "app.py").write_text(textwrap.dedent(APP))
    config = {
        "version": "2.0",
        "app_name": "tiny",
        "stages": {STAGE: {"environment_variables": {"TABLE_NAME": TABLE}}},
    }
    (folder / ".chalice" / "config.json").write_text(json.dumps(config))
    return folder


def _worker_argv(service: services.ServiceDef, tiny_app: Path) -> list[str]:
    """The event worker of ``service`` on the stage, with the tiny app as its project."""
    return [
        sys.executable, "-m", "tools.local.eventworker",
        "--service", service.name, "--stage", STAGE, "--project-dir", str(tiny_app),
    ]  # fmt: skip


@pytest.fixture
def worker(servers: tuple[str, str], tiny_app: Path) -> Iterator[Child]:
    events_url, dynamodb_url = servers
    aws = endpoints.clients(events_url, dynamodb_url)
    local_events.wire(aws["sqs"], aws["events"], STAGE)
    endpoints.create_stream_table(aws["dynamodb"], TABLE)
    env = {
        **os.environ,
        **local_events.FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": local_events.REGION,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
        "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": dynamodb_url,
        "AWS_ENDPOINT_URL_SQS": events_url,
        "AWS_ENDPOINT_URL_EVENTBRIDGE": events_url,
        "PYTHONUNBUFFERED": "1",
    }
    argv = _worker_argv(services.USER, tiny_app)
    child = Child("user_worker", argv, env, cwd=services.ROOT)
    try:
        assert child.wait_for_line(lambda line: line.startswith("Worker "), 30), child.tail()
        yield child
    finally:
        child.stop()
        aws["dynamodb"].delete_table(TableName=TABLE)


def _line(child: Child, prefix: str) -> str:
    line = child.wait_for_line(lambda text: text.startswith(prefix), 20)
    assert line is not None, child.tail()
    return line


def test_the_worker_relays_a_change_and_consumes_a_message(worker: Child, servers) -> None:
    aws: dict[str, Any] = endpoints.clients(*servers)
    subscription = topology.subscriptions_of(services.USER)[0]

    aws["dynamodb"].put_item(TableName=TABLE, Item={"k": {"S": "first"}})
    url = aws["sqs"].get_queue_url(QueueName=subscription.queue_name(STAGE))["QueueUrl"]
    aws["sqs"].send_message(QueueUrl=url, MessageBody="hello")

    assert _line(worker, "RELAYED") == f'RELAYED ["first"] table={TABLE}'
    assert _line(worker, "CONSUMED") == 'CONSUMED ["hello"]'
    counts = aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert any(f"<- stream of table {TABLE}" in line for line in worker.lines())


def test_the_worker_stops_on_sigterm(worker: Child) -> None:
    worker.signal_group(signal.SIGTERM)

    assert worker.wait(5.0) == 0, worker.tail()


def test_a_handler_the_app_lacks_is_named_not_fatal(servers, tiny_app: Path) -> None:
    # The tiny app defines user_api's two handlers; product_api's are missing from it.
    env = {**os.environ, "AWS_ENDPOINT_URL": servers[0], "AWS_DEFAULT_REGION": "us-east-1"}
    argv = _worker_argv(services.PRODUCT, tiny_app)
    child = Child("product_worker", argv, env, cwd=services.ROOT)
    try:
        ready = child.wait_for_line(lambda line: line.startswith("Worker "), 30)
        assert ready is not None, child.tail()
        assert "polling with 0 thread(s)" in ready
        text = "\n".join(child.lines())
        assert "defines no handler relay_product_changes" in text
        assert "defines no handler on_user_events" in text
    finally:
        child.stop()
