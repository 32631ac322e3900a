"""schemathesis against the three apps' own OpenAPI documents, on a running local system.

``python -m tools.fuzz [--max-examples N] [--seed S]`` starts its own ``LocalSystem`` (or uses
``--gateway/--user/--product`` URLs of a running one), registers a user through the gateway for
the secured routes' token, and runs the schemathesis CLI once per document with the checks the
contract promises: no 5xx of our own making, only documented statuses, content types and bodies,
and every request that breaks the document refused. It prints, per app, how many requests were
sent and what failed; the exit status is non-zero when anything did.

The integration test (``tests/integration/test_schemathesis.py``) runs :func:`run` with a small
budget; ``make fuzz`` runs this module with a large one. The CLI rather than schemathesis' Python
API: its JSON and HAR reports give the counts, and its output is what a person reproduces from.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
DEFAULT_SEED = 15


@dataclass
class Result:
    """One document's run: what it sent and what it found."""

    app: str
    requests: int
    test_cases: int
    failures: list[str] = field(default_factory=list)
    exit_code: int = 0
    output: str = ""


def _post(url: str, body: Mapping[str, str]) -> dict[str, object]:
    request = Request(  # noqa: S310 - a URL of the local system we started or were given
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def token_for(gateway: str) -> str:
    """A freshly registered user's token, through the gateway as any client would get one."""
    name, password = f"fuzz_{uuid.uuid4().hex[:10]}", secrets.token_urlsafe(16)
    _post(f"{gateway}/register_user", {"username": name, "password": password})
    return str(_post(f"{gateway}/login_user", {"username": name, "password": password})[
        "access_token"
    ])  # fmt: skip


def run_one(app: str, base_url: str, token: str, max_examples: int, seed: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        report, har = Path(tmp) / "report.json", Path(tmp) / "requests.har"
        argv = [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{base_url}/openapi.json",
            "--checks", ",".join(CHECKS),
            "--max-examples", str(max_examples),
            "--seed", str(seed),
            "--generation-deterministic",
            "--header", f"Authorization: Bearer {token}",
            "--workers", "1",
            "--no-color",
            "--output-sanitize", "false",
            "--report", "json,har",
            "--report-json-path", str(report),
            "--report-har-path", str(har),
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp, check=False)
        if not report.exists():
            return Result(app, 0, 0, [done.stderr[-2000:]], done.returncode, done.stdout)
        summary = json.loads(report.read_text())
        requests = len(json.loads(har.read_text())["log"]["entries"]) if har.exists() else 0
        failures = [
            f"{f.get('operation', '?')}: {f.get('title') or f.get('code')}"
            for f in summary.get("failures", [])
        ] + [f"error: {e}" for e in summary.get("errors", [])]
        return Result(
            app,
            requests,
            int(summary["test_cases"]["generated"]),
            failures,
            done.returncode,
            done.stdout,
        )


def run(urls: Mapping[str, str], max_examples: int, seed: int = DEFAULT_SEED) -> list[Result]:
    """Every app's document, one after the other (two cores: parallel runs only slow each
    other and make timings, and so failures of the slow kind, less repeatable)."""
    token = token_for(urls["gateway_api"])
    return [run_one(app, url, token, max_examples, seed) for app, url in urls.items()]


def report(results: Sequence[Result]) -> str:
    lines = []
    for result in results:
        state = "ok" if not result.failures and result.exit_code == 0 else "FAILED"
        lines.append(
            f"{result.app}: {result.requests} requests, {result.test_cases} test cases, "
            f"{len(result.failures)} failures ({state})"
        )
        lines.extend(f"  - {failure}" for failure in result.failures)
    lines.append(f"total: {sum(r.requests for r in results)} requests")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--gateway")
    parser.add_argument("--user")
    parser.add_argument("--product")
    args = parser.parse_args(argv)
    system = None
    if args.gateway and args.user and args.product:
        urls = {"gateway_api": args.gateway, "user_api": args.user, "product_api": args.product}
    else:
        from tools import services
        from tools.localrun import LocalSystem, Ports

        system = LocalSystem(Ports.free())
        system.start()
        urls = {s.name: system.url(s) for s in (services.GATEWAY, services.USER, services.PRODUCT)}
    try:
        results = run(urls, args.max_examples, args.seed)
    finally:
        if system is not None:
            system.stop()
    for result in results:
        if result.failures:
            print(result.output)
    print(report(results))
    return 0 if all(not r.failures and r.exit_code == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
