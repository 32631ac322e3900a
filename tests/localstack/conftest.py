"""Host-mode LocalStack for the tests in this folder: one per session, on a free port.

The controller is ``localstack/host/lsctl.py`` (standard library only), loaded by path: the
repository's ``localstack/`` folder is not a Python package. ``up()`` installs whatever is
missing on first use (LocalStack's virtualenv, the python3.11 Lambda runtime, DynamoDB Local),
so a fresh clone needs nothing by hand; that first run takes about a minute.

``LOCALSTACK_TEST_ENDPOINT=http://127.0.0.1:4566`` reuses a LocalStack that is already running
(``make localstack-up``) and leaves it running; the process-level checks then use their own
instance anyway.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from tests.localstack.helpers import ROLE_ARN, Stack, free_port, make_zip
from tools.deployed import load_lsctl

REUSE_ENV = "LOCALSTACK_TEST_ENDPOINT"


@pytest.fixture(scope="session")
def lsctl() -> ModuleType:
    return load_lsctl()


@pytest.fixture(scope="session")
def stack(lsctl: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Host-mode LocalStack for the session, or the one ``LOCALSTACK_TEST_ENDPOINT`` names."""
    reuse = os.environ.get(REUSE_ENV)
    if reuse:
        yield Stack(reuse.rstrip("/"))
        return
    controller = lsctl.HostLocalStack(
        port=free_port(), home=tmp_path_factory.mktemp("localstack-host")
    )
    started = time.monotonic()
    endpoint = controller.up(timeout=300)
    print(f"\nhost LocalStack up in {time.monotonic() - started:.1f}s at {endpoint}")
    try:
        yield Stack(endpoint, controller)
    finally:
        controller.down()


@pytest.fixture
def deploy(stack: Stack) -> Iterator[Callable[..., str]]:
    """Create a python3.11 function from source and wait until it is Active; deleted afterwards."""
    lambda_client = stack.client("lambda")
    created: list[str] = []

    def _deploy(
        source: str,
        *,
        handler: str = "app.handler",
        environment: dict[str, str] | None = None,
        timeout: int = 30,
        extra_files: dict[str, str] | None = None,
    ) -> str:
        name = f"fn-{uuid.uuid4().hex[:10]}"
        lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=ROLE_ARN,
            Handler=handler,
            Code={"ZipFile": make_zip({"app.py": source, **(extra_files or {})})},
            Timeout=timeout,
            MemorySize=256,
            Environment={"Variables": environment or {}},
        )
        created.append(name)
        lambda_client.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        return name

    yield _deploy
    for name in created:
        lambda_client.delete_function(FunctionName=name)


