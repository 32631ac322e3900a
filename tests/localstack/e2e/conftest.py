"""The end-to-end layer's stage: deployed once per module to the session's host LocalStack
(``stack``, tests/localstack/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.localstack.helpers import Stack
from tools.deployed import Deployed


@pytest.fixture(scope="module")
def deployed(stack: Stack) -> Iterator[Deployed]:
    stage = Deployed(stack.endpoint)
    if stage.stacks():  # a run that died before its destroy left the stage behind
        stage.destroy()
    stage.deploy()
    try:
        yield stage
    finally:
        if stage.stacks():
            stage.destroy()
