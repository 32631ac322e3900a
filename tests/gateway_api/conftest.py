"""Fixtures for the gateway's tests: stub services on loopback and a gateway pointed at them.

Why the gateway is pointed at the stubs through a stage config and not ``monkeypatch.setenv``:
``chalice.test.Client`` (like ``chalice local``, and like Lambda itself) lays the stage's
``environment_variables`` over ``os.environ`` for each request, so the config's
``USER_API_URL=http://127.0.0.1:5001`` beats anything a test sets in the process environment.
That precedence is right for the app: a deployed function must not take its upstreams from
anywhere but its stage. So the app keeps no test-only hook, and instead ``make_gateway`` does what
a new stage would do: it copies the real ``.chalice/config.json`` into a temporary project folder,
changes only the given keys of the ``local`` stage, and builds the ordinary
``chalice.test.Client`` on that folder. Everything else (global settings, the JWKS reference, the
merge order) comes from the real file, and a key that the real local stage does not define is
refused, so a renamed setting cannot leave a test silently pointing at the wrong place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chalice.test import Client

from tests.gateway_api.stubs import ClosedPort, Stub
from tests.support.apps import load_app
from tools import services

# Settings a test may override in the local stage although the real file sets them globally.
_GLOBAL_SETTINGS = (
    "UPSTREAM_CONNECT_TIMEOUT",
    "UPSTREAM_READ_TIMEOUT",
    "HEALTH_TIMEOUT",
    "UPSTREAM_HEALTH_PATH",
)


@pytest.fixture
def make_gateway(tmp_path: Path, local_keys: Path) -> Callable[..., Client]:
    """Build a gateway test client whose ``local`` stage has ``overrides`` in its environment."""
    real = services.GATEWAY.config()
    known = set(real["stages"]["local"]["environment_variables"]) | set(_GLOBAL_SETTINGS)
    made = 0

    def make(**overrides: str) -> Client:
        nonlocal made
        unknown = set(overrides) - known
        assert not unknown, f"not settings of the local stage: {sorted(unknown)}"
        cfg = json.loads(json.dumps(real))
        cfg["stages"]["local"]["environment_variables"].update(overrides)
        made += 1
        project = tmp_path / f"gateway-{made}"
        (project / ".chalice").mkdir(parents=True)
        (project / ".chalice" / "config.json").write_text(json.dumps(cfg))
        module = load_app(services.GATEWAY)
        return Client(module.app, stage_name="local", project_dir=str(project))

    return make


@pytest.fixture
def user_stub() -> Iterator[Stub]:
    stub = Stub("user_api")
    yield stub
    stub.close()


@pytest.fixture
def product_stub() -> Iterator[Stub]:
    stub = Stub("product_api")
    yield stub
    stub.close()


@pytest.fixture
def closed_port() -> Iterator[ClosedPort]:
    port = ClosedPort()
    yield port
    port.close()


@pytest.fixture
def gateway(make_gateway: Callable[..., Client], user_stub: Stub, product_stub: Stub) -> Client:
    """The gateway with both services stubbed and the stage's own timeouts."""
    return make_gateway(USER_API_URL=user_stub.url, PRODUCT_API_URL=product_stub.url)
