"""The LocalStack setup that `make localstack-up` uses, checked without Docker.

The compose file must keep the pinned image that starts without a token, pass a token through
only when one is set, and stay on loopback; the health wait must wait for exactly the services
the stacks use, and give up in bounded time. Starting the container itself needs Docker, which
this machine does not have: that part is verified only by running it (docs/deploy.md).
"""

from __future__ import annotations

import json
import re
import runpy
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tools.services import ROOT

pytestmark = pytest.mark.deploy

LOCALSTACK = ROOT / "localstack"


# By path: a `localstack` package installed in the venv (LocalStack's CLI) would shadow the
# folder if it were imported by name.
wait_healthy = SimpleNamespace(**runpy.run_path(str(LOCALSTACK / "wait_healthy.py")))


def needed_services() -> list[str]:
    makefile = (LOCALSTACK / "Makefile").read_text()
    match = re.search(r"^NEEDED := (.+)$", makefile, re.MULTILINE)
    assert match is not None
    return match.group(1).split()


def test_compose_pins_the_last_tokenless_image_and_passes_a_token_only_when_set() -> None:
    compose = yaml.safe_load((LOCALSTACK / "docker-compose.yml").read_text())
    service = compose["services"]["localstack"]
    assert service["image"] == "${LOCALSTACK_IMAGE:-localstack/localstack:4.14.0}"
    assert "LOCALSTACK_AUTH_TOKEN" in service["environment"]  # bare name: passed through if set
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]  # Lambda containers
    enabled = next(e for e in service["environment"] if e.startswith("SERVICES="))
    assert set(needed_services()) | {"sts", "logs"} <= set(enabled.split("=", 1)[1].split(","))


def test_the_wait_covers_every_service_a_stack_uses() -> None:
    assert set(needed_services()) == {
        "cloudformation",
        "dynamodb",
        "dynamodbstreams",  # the relays' event source mappings read the table streams
        "lambda",
        "apigateway",
        "iam",
        "s3",
        "ssm",
        "secretsmanager",
        "events",  # the bus stack, the rules
        "sqs",  # the subscriptions' queues, dead-letter and failure queues
        "cloudwatch",  # the observability stack's alarms and dashboard
        "sns",  # its alarm topic
    }


class _Health(BaseHTTPRequestHandler):
    services: dict[str, str] = {}  # noqa: RUF012 - what the fake LocalStack reports

    def do_GET(self) -> None:
        body = json.dumps({"services": _Health.services, "edition": "community"}).encode()
        self.send_response(200 if self.path == "/_localstack/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def health_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/_localstack/health"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_returns_once_every_needed_service_is_up(health_url: str) -> None:
    _Health.services = {name: "available" for name in needed_services()}
    _Health.services["lambda"] = "running"
    assert wait_healthy.wait(health_url, needed_services(), timeout=5, interval=0.05)


def test_wait_gives_up_in_bounded_time_naming_what_is_missing(
    health_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _Health.services = {name: "available" for name in needed_services()}
    _Health.services["cloudformation"] = "initializing"
    started = time.monotonic()
    assert not wait_healthy.wait(health_url, needed_services(), timeout=0.5, interval=0.05)
    assert time.monotonic() - started < 2
    assert "cloudformation" in capsys.readouterr().err


def test_wait_treats_no_answer_as_not_up() -> None:
    assert wait_healthy.missing_services("http://127.0.0.1:9/_localstack/health", ["s3"], 0.5) == [
        "s3"
    ]
