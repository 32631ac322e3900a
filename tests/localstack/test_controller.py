"""The controller never signals what is not its own, refuses a busy port, and cleans up after a
LocalStack that was killed: its DynamoDB Local and the processes its functions started.

Each test uses its own instance folder (and, when it starts one, its own LocalStack).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.localstack.helpers import (
    ROLE_ARN,
    Stack,
    alive,
    free_port,
    invoke,
    make_zip,
    processes_mentioning,
)

pytestmark = pytest.mark.localstack


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])


def test_a_stale_pid_file_is_removed_and_its_pid_never_signalled(lsctl, tmp_path) -> None:
    # An unrelated process group leader whose pid a stale localstack.pid happens to name.
    victim = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        port = free_port()
        home = tmp_path / "instance"
        home.mkdir()
        controller = lsctl.HostLocalStack(port=port, home=home)
        records = [
            {"pid": victim.pid, "port": port, "started": 0},  # written before start times
            # the right start time, but not LocalStack's command line: still not ours
            {"pid": victim.pid, "port": port, "started": 0, "start_time": _start_time(victim.pid)},
            # LocalStack's kind of record, but another process's start time: a reused pid
            {"pid": victim.pid, "port": port, "started": 0, "start_time": 1},
        ]
        for record in records:
            controller.pid_path.write_text(json.dumps(record))
            assert controller.pid() is None, record
            assert not controller.pid_path.exists(), record
            assert controller.status()["running"] is False

            controller.pid_path.write_text(json.dumps(record))
            assert lsctl.main(["status", "--port", str(port), "--home", str(home)]) != 0

            controller.pid_path.write_text(json.dumps(record))
            controller.down()
            time.sleep(0.3)
            assert victim.poll() is None, f"down signalled an unrelated process ({record})"
            assert not controller.pid_path.exists()
    finally:
        victim.kill()
        victim.wait()


def test_up_refuses_a_port_in_use_at_once(lsctl, tmp_path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        home = tmp_path / "instance"
        controller = lsctl.HostLocalStack(port=port, home=home)
        started = time.monotonic()
        try:
            with pytest.raises(lsctl.HostLocalStackError, match=f"port {port} is in use"):
                controller.up(timeout=20)
            assert time.monotonic() - started < 10
            assert controller.pid() is None
            assert not controller.pid_path.exists()
            assert lsctl.main(["up", "--port", str(port), "--home", str(home),
                               "--timeout", "20"]) != 0
            assert processes_mentioning(str(controller.home)) == []
        finally:
            controller.down()


def test_up_fails_fast_when_localstack_cannot_listen(lsctl, tmp_path, monkeypatch) -> None:
    """The port is taken between the check and LocalStack's bind: its log says so; up stops it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        controller = lsctl.HostLocalStack(port=port, home=tmp_path / "instance")
        monkeypatch.setattr(controller, "_check_port", lambda: None, raising=False)
        started = time.monotonic()
        try:
            with pytest.raises(lsctl.HostLocalStackError, match=f"port {port} is in use"):
                controller.up(timeout=90)
            assert time.monotonic() - started < 60
            assert processes_mentioning(str(controller.home)) == []
        finally:
            controller.down()


SPAWNER = '''
import os
import subprocess

def handler(event, context):
    child = subprocess.Popen(["sleep", "600"])
    return {"child": child.pid, "environment": os.getpid()}
'''


def _deploy_spawner(stack: Stack) -> dict[str, int]:
    lambda_client = stack.client("lambda")
    lambda_client.create_function(
        FunctionName="spawner",
        Runtime="python3.11",
        Role=ROLE_ARN,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": SPAWNER})},
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName="spawner")
    outcome = invoke(stack, "spawner", {})
    assert outcome["function_error"] is None, outcome
    return outcome["payload"]


def _java(home: str) -> list[int]:
    return [pid for pid, cmd in processes_mentioning(home) if "DynamoDBLocal.jar" in cmd]


def test_a_killed_localstack_leaves_nothing_behind_for_up_or_down(lsctl, tmp_path) -> None:
    controller = lsctl.HostLocalStack(port=free_port(), home=tmp_path / "instance")
    home = str(controller.home)
    try:
        stack = Stack(controller.up(timeout=300), controller)
        stack.client("dynamodb").list_tables()  # starts DynamoDB Local
        spawned = _deploy_spawner(stack)
        java = _java(home)
        assert java
        assert alive(spawned["child"])

        os.kill(controller.pid(), signal.SIGKILL)
        time.sleep(2)
        # up starts a fresh instance, after killing what the dead one left behind.
        stack = Stack(controller.up(timeout=300), controller)
        assert not alive(spawned["child"]), "a function's child outlived LocalStack"
        assert not any(alive(pid) for pid in java), "the old DynamoDB Local survived"

        stack.client("dynamodb").list_tables()
        spawned = _deploy_spawner(stack)
        assert _java(home)
        assert alive(spawned["child"])
        os.kill(controller.pid(), signal.SIGKILL)
        # down alone: the leader is gone, its group and the rest are still ours.
        controller.down()
        assert not alive(spawned["child"])
        assert processes_mentioning(home) == []
        assert not controller.pid_path.exists()
    finally:
        controller.down()
