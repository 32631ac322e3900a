"""One request's path through the services, from ``make run``'s logs, as a timeline.

``python -m tools.timeline REQUEST_ID`` (``make timeline ID=...``) reads the lines ``make run``
kept (``.local/logs/run.log``, see ``tools.local.runlog``), picks every JSON log line carrying
that ``request_id`` (the gateway forwards the caller's ``X-Request-Id``, or the one it made, to
every service it calls, and every line of a request carries it), and prints them in the order
they started: the service, the route, the status and the duration of each request line, and the
other lines of the request (a warning, a refused login) where they happened::

    request 7d0c… : 3 lines from 2 services, 14.2 ms end to end
      +0.0 ms  gateway_api  POST /add_product           201   14.2 ms
      +2.1 ms  product_api  POST /add_product           201    9.8 ms
      +9.6 ms  product_api  product added

A request line is logged when the request ends, with its duration, so its start is its
timestamp less its duration; other lines are placed at their own timestamp. The deployed
equivalent is the CloudWatch Logs Insights query the templates save (docs/observability.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tools.local.runlog import DEFAULT_PATH, read_lines

REQUEST_MESSAGE = "request"  # the line svckit.web logs once per request, with its outcome


@dataclass(frozen=True)
class Entry:
    start: datetime
    service: str
    text: str  # "POST /add_product  201  9.8 ms", or the message of any other line
    duration_ms: float | None


def _timestamp(value: Any) -> datetime | None:
    """Powertools' ``2026-11-22 01:39:10,458+0000``."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S,%f%z")
    except ValueError:
        return None


def entries(lines: Iterable[tuple[str, str]], request_id: str) -> list[Entry]:
    """The lines of ``request_id``, as timeline entries in the order they started."""
    found = []
    for program, line in lines:
        if request_id not in line or not line.startswith("{"):
            continue  # cheap test first: most lines are another request's
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("request_id") != request_id:
            continue
        when = _timestamp(record.get("timestamp"))
        if when is None:
            continue
        service = str(record.get("service") or program)
        duration = record.get("duration_ms")
        if record.get("message") == REQUEST_MESSAGE and isinstance(duration, int | float):
            start = when.timestamp() - duration / 1000
            route = f"{record.get('method', '?')} {record.get('path', '?')}"
            text = f"{route:<32} {record.get('status', '?')}"
            found.append(
                Entry(datetime.fromtimestamp(start, when.tzinfo), service, text, float(duration))
            )
        else:
            level = record.get("level", "")
            prefix = "" if level in ("INFO", "") else f"{level}: "
            found.append(Entry(when, service, f"{prefix}{record.get('message', '')}", None))
    return sorted(found, key=lambda e: e.start)


def render(request_id: str, found: Sequence[Entry]) -> str:
    if not found:
        return (
            f"request {request_id}: no lines (is it the id from X-Request-Id, and was make run on?)"
        )
    first = found[0].start
    end = max(e.start.timestamp() + (e.duration_ms or 0) / 1000 for e in found)
    services = {e.service for e in found}
    lines = [
        f"request {request_id}: {len(found)} lines from {len(services)} service"
        f"{'s' if len(services) > 1 else ''}, "
        f"{(end - first.timestamp()) * 1000:.1f} ms end to end"
    ]
    width = max(len(e.service) for e in found)
    for entry in found:
        offset = (entry.start - first).total_seconds() * 1000
        took = f" {entry.duration_ms:7.1f} ms" if entry.duration_ms is not None else ""
        lines.append(f"  +{offset:7.1f} ms  {entry.service:<{width}}  {entry.text}{took}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request_id", help="the X-Request-Id of the request")
    parser.add_argument("--log", type=Path, default=DEFAULT_PATH, help="make run's log file")
    args = parser.parse_args(argv)
    found = entries(read_lines(args.log), args.request_id)
    print(render(args.request_id, found))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
