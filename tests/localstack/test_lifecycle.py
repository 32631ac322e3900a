"""``down`` stops host-mode LocalStack and everything it started; ``up`` twice is one instance.

Uses its own instance (not the session's): stopping is the point. Before ``down`` it makes
LocalStack start every kind of child it has: DynamoDB Local (Java) and a warm function process.
"""

from __future__ import annotations

import pytest

from tests.localstack.helpers import (
    ROLE_ARN,
    Stack,
    free_port,
    group_members,
    make_zip,
    processes_mentioning,
)

pytestmark = pytest.mark.localstack


def test_down_leaves_no_process_behind(lsctl, tmp_path) -> None:
    controller = lsctl.HostLocalStack(port=free_port(), home=tmp_path / "instance")
    try:
        _exercise_and_stop(controller)
    finally:
        controller.down()  # a no-op after a passing test; cleans up after a failing one


def _exercise_and_stop(controller) -> None:
    endpoint = controller.up(timeout=300)
    stack = Stack(endpoint, controller)
    # up again: a no-op on the running instance.
    pid = controller.pid()
    assert controller.up(timeout=30) == endpoint
    assert controller.pid() == pid

    stack.client("dynamodb").list_tables()  # starts DynamoDB Local
    lambda_client = stack.client("lambda")
    lambda_client.create_function(
        FunctionName="warm",
        Runtime="python3.11",
        Role=ROLE_ARN,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return 'warm'\n"})},
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName="warm")
    assert lambda_client.invoke(FunctionName="warm")["Payload"].read() == b'"warm"'
    home = str(controller.home)
    running = processes_mentioning(home)
    # LocalStack, DynamoDB Local and the warm function's environment are all there.
    assert any("localstack.runtime.main" in cmd for _, cmd in running), running
    assert any("DynamoDBLocal.jar" in cmd for _, cmd in running), running
    assert any("hostinit.py" in cmd for _, cmd in running), running

    controller.down()

    assert controller.pid() is None
    assert group_members(pid) == []
    assert processes_mentioning(home) == []
    assert controller.status()["running"] is False
    # The state stays (only the processes are gone).
    assert (controller.home / "state").is_dir()
    assert controller.log_path.read_text()
