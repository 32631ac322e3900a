"""The deployed system's cold path on a host-mode LocalStack: numbers to read, not a test.

``python -m tools.bench_localstack`` (part of ``make bench``) starts its own LocalStack on a
free port, deploys the stage with ``make deploy-localstack`` (timed), drives every function once
through the deployed gateway and the events (register, log in, add a product, delete the user),
then prints, per function, the ``Init Duration`` (importing the app: its cold start) and the
``Duration`` of its first invocation from the ``REPORT`` lines the host executor writes, the
size of each service's zip, and how long deploy and destroy took. It destroys the stage and
stops LocalStack at the end.

What these numbers are: the functions run as host processes (localstack/host), on this
machine's CPU, not in Lambda's microVMs; the init is the same Python import work Lambda does,
so it compares services and changes with each other, not with AWS's absolute figures.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.deployed import Deployed, load_lsctl
from tools.local.process import free_port
from tools.services import SERVICES

REPORT = re.compile(r"REPORT RequestId: \S+\tDuration: (?P<duration>[\d.]+) ms.*?"
                    r"(?:Init Duration: (?P<init>[\d.]+) ms)?\t?$")  # fmt: skip
EVENT_SECONDS = 30.0
ZIPS = Path("build") / "chalice"


def _poll(probe: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.5)
    return False


def _call(url: str, method: str = "GET", body: Any = None, token: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, method=method)  # noqa: S310 - LocalStack's URL
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def drive(stage: Deployed) -> None:
    """Every function once: the three APIs, both relays and both consumers."""
    gateway = stage.gateway_url
    name = f"bench_{uuid.uuid4().hex[:8]}"
    user = {"username": name, "password": "correct-horse-1234"}
    _call(f"{gateway}/register_user", "POST", user)
    token = _call(f"{gateway}/login_user", "POST", user)[1]["access_token"]
    _call(f"{gateway}/add_product", "POST", {"product_id": name, "product_name": "x"}, token)
    _poll(lambda: bool((_call(f"{gateway}/users/{name}")[1] or {}).get("points")), EVENT_SECONDS)
    _call(f"{gateway}/users/{name}", "DELETE", token=token)
    _poll(lambda: _call(f"{gateway}/products/{name}")[0] == 404, EVENT_SECONDS)


def first_reports(log_dir: Path) -> dict[str, tuple[float | None, float]]:
    """Each function's first REPORT line: (init ms, first invocation's duration ms)."""
    found: dict[str, tuple[float | None, float]] = {}
    for log in sorted(log_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            match = REPORT.search(line)
            if match:
                init = match.group("init")
                found[log.stem] = (float(init) if init else None, float(match.group("duration")))
                break
    return found


def main() -> int:
    lsctl = load_lsctl()
    with tempfile.TemporaryDirectory(prefix="bench-localstack-") as home:
        controller = lsctl.HostLocalStack(port=free_port(), home=Path(home))
        started = time.perf_counter()
        endpoint = controller.up(timeout=300)
        up_s = time.perf_counter() - started
        try:
            stage = Deployed(endpoint)
            started = time.perf_counter()
            stage.deploy()
            deploy_s = time.perf_counter() - started
            drive(stage)
            reports = first_reports(controller.function_log_dir)
            started = time.perf_counter()
            stage.destroy()
            destroy_s = time.perf_counter() - started
        finally:
            controller.down()
    print(f"\nLocalStack (host mode) up in {up_s:.1f} s; deploy {deploy_s:.1f} s; "
          f"destroy {destroy_s:.1f} s")  # fmt: skip
    print(f"\n{'function':45} {'init ms':>9} {'first invoke ms':>16}")
    for function, (init, duration) in sorted(reports.items()):
        shown = f"{init:9.1f}" if init is not None else f"{'-':>9}"
        print(f"{function:45} {shown} {duration:16.1f}")
    print(f"\n{'service':12} {'zip KiB':>8}")
    for service in SERVICES:
        archive = ZIPS / stage.stage / service.name / "deployment.zip"
        size = f"{archive.stat().st_size / 1024:8.0f}" if archive.exists() else f"{'-':>8}"
        print(f"{service.name:12} {size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
