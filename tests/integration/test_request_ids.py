"""``X-Request-Id`` across processes: echoed to the caller, forwarded by the gateway, and on
the log lines of every service the request touched.

Only real processes show this end to end: the id must leave the gateway as a header, arrive in
user_api's middleware and land in its JSON log lines on stdout, which ``LocalSystem`` captures.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.system import post
from tools import services
from tools.localrun import LocalSystem

pytestmark = pytest.mark.integration

LOG_WAIT_SECONDS = 5.0


def _log_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _carries(request_id: str) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        record = _log_record(line)
        return record is not None and record.get("request_id") == request_id

    return match


def _lines_with(system: LocalSystem, service: str, request_id: str) -> list[dict[str, Any]]:
    """Every JSON log line of ``service`` carrying ``request_id``, waiting for the first."""
    child = system.children[service]
    assert child.wait_for_line(_carries(request_id), LOG_WAIT_SECONDS), (
        f"{service} logged nothing with request_id {request_id}:\n{child.tail()}"
    )
    return [r for r in map(_log_record, child.lines()) if r and r.get("request_id") == request_id]


def test_callers_request_id_is_echoed_forwarded_and_logged(
    system: LocalSystem, gateway: str, unique: Callable[[str], str]
) -> None:
    request_id = f"itest-{uuid.uuid4().hex}"
    name = unique("rid")

    reply = post(
        gateway,
        "/register_user",
        {"username": name, "password": "correct-horse-1234"},
        headers={"X-Request-Id": request_id},
    )

    assert reply.status == 201, reply
    assert reply.header("X-Request-Id") == request_id
    user_lines = _lines_with(system, services.USER.name, request_id)
    assert any(r.get("path") == "/register" and r.get("status") == 201 for r in user_lines), (
        user_lines
    )
    gateway_lines = _lines_with(system, services.GATEWAY.name, request_id)
    assert any(r.get("path") == "/register_user" for r in gateway_lines), gateway_lines


def test_gateway_made_request_id_reaches_the_service(
    system: LocalSystem, gateway: str, unique: Callable[[str], str]
) -> None:
    reply = post(gateway, "/login_user", {"username": unique("nobody"), "password": "x" * 8})

    assert reply.status == 401, reply
    request_id = reply.header("X-Request-Id")
    assert request_id, reply
    user_lines = _lines_with(system, services.USER.name, request_id)
    assert any(r.get("path") == "/login" and r.get("status") == 401 for r in user_lines), user_lines


def test_unsafe_request_id_is_replaced_not_echoed(gateway: str) -> None:
    reply = post(
        gateway,
        "/login_user",
        {"username": "nobody_here", "password": "x" * 8},
        headers={"X-Request-Id": "bad id with spaces"},
    )
    assert reply.status == 401, reply
    assert reply.header("X-Request-Id") not in (None, "", "bad id with spaces")
