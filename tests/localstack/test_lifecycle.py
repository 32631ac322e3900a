"""``down`` stops host-mode LocalStack and everything it started; ``up`` twice is one instance.

Uses its own instance (not the session's): stopping is the point. Before ``down`` it makes
LocalStack start every kind of child it has: DynamoDB Local (Java) and a warm function process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.localstack.helpers import ROLE_ARN, Stack, free_port, make_zip

pytestmark = pytest.mark.localstack


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line or environment names ``text`` (e.g. the instance dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append((int(proc.name), cmdline))
    return found


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


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
    running = _processes_mentioning(home)
    # LocalStack, DynamoDB Local and the warm function's environment are all there.
    assert any("localstack.runtime.main" in cmd for _, cmd in running), running
    assert any("DynamoDBLocal.jar" in cmd for _, cmd in running), running
    assert any("hostinit.py" in cmd for _, cmd in running), running

    controller.down()

    assert controller.pid() is None
    assert _group_members(pid) == []
    assert _processes_mentioning(home) == []
    assert controller.status()["running"] is False
    # The state stays (only the processes are gone).
    assert (controller.home / "state").is_dir()
    assert controller.log_path.read_text()
