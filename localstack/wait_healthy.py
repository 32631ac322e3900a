"""Wait until LocalStack reports every service a deploy needs as available; exit 1 on timeout.

``python3 wait_healthy.py --url http://localhost.localstack.cloud:4566/_localstack/health
--timeout 120 cloudformation dynamodb ...`` polls LocalStack's health endpoint every couple of
seconds. Standard library only, so it runs with any Python 3 before the project's virtualenv
exists. A service counts as up when LocalStack says "available" (ready, started on first use) or
"running".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

UP = ("available", "running")


def missing_services(url: str, needed: list[str], timeout: float = 3.0) -> list[str]:
    """The needed services not yet up; all of them when LocalStack does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local URL
            services = json.loads(response.read()).get("services", {})
    except (OSError, ValueError):
        return list(needed)
    return [name for name in needed if services.get(name) not in UP]


def wait(url: str, needed: list[str], timeout: float, interval: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while True:
        missing = missing_services(url, needed)
        if not missing:
            print(f"LocalStack is up: {url}", flush=True)
            return True
        if missing != last:
            print(f"waiting for: {' '.join(missing)}", flush=True)
            last = missing
        if time.monotonic() + interval > deadline:
            print(
                f"LocalStack did not report {' '.join(missing)} within {timeout:.0f}s; "
                "see `docker compose logs localstack` in localstack/",
                file=sys.stderr,
            )
            return False
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("services", nargs="+")
    args = parser.parse_args(argv)
    return 0 if wait(args.url, args.services, args.timeout, args.interval) else 1


if __name__ == "__main__":
    sys.exit(main())
