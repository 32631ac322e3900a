"""Helpers for the host-mode LocalStack tests: the controller, clients, packages, polling."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "000000000000"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/lambda-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """A running LocalStack as the tests see it: endpoint, clients, and the controller if ours."""

    def __init__(self, endpoint: str, controller: Any = None) -> None:
        self.endpoint = endpoint
        self.controller = controller

    def client(self, service: str) -> Any:
        return boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
        ).client(service, endpoint_url=self.endpoint)


def make_zip(files: dict[str, str]) -> bytes:
    """A deployment package made in the test: module name -> source."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in files.items():
            archive.writestr(name, source)
    return buffer.getvalue()


def invoke(stack: Stack, name: str, event: Any) -> dict[str, Any]:
    """Synchronous invoke with the log tail; the payload parsed, the logs decoded."""
    response = stack.client("lambda").invoke(
        FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail"
    )
    return {
        "status": response["StatusCode"],
        "function_error": response.get("FunctionError"),
        "payload": json.loads(response["Payload"].read() or b"null"),
        "logs": base64.b64decode(response.get("LogResult", "")).decode(),
    }


def wait_for(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")


def processes_mentioning(text: str) -> list[tuple[int, str]]:
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


def group_members(pgid: int) -> list[int]:
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
