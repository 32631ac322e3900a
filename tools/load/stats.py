"""Locust's CSV statistics, read back and printed as ``make load``'s tables.

Why from the CSVs rather than locust's own summary: the runner needs the numbers (the ratios
against the peer, the test's per-route checks), and the CSVs are locust's stable machine output,
kept beside the HTML report under ``.local/load/``. Locust's percentiles are its own bucketed
ones (exact below 100 ms, to 10 ms below 1 s, to 100 ms above).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class RouteStats:
    method: str  # "" for the aggregated row
    name: str
    requests: int
    failures: int
    per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def label(self) -> str:
        return f"{self.method} {self.name}".strip()


@dataclass(frozen=True)
class Failure:
    method: str
    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class RunStats:
    """One locust run: a row per route, the aggregated row, and what failed how often."""

    profile: str
    system: str
    routes: tuple[RouteStats, ...]
    total: RouteStats
    failures: tuple[Failure, ...]

    def route(self, method: str, name: str) -> RouteStats | None:
        return next((r for r in self.routes if (r.method, r.name) == (method, name)), None)


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:  # "N/A" where a route has no samples
        return 0.0


def read(prefix: Path, profile: str, system: str) -> RunStats:
    """``<prefix>_stats.csv`` and ``<prefix>_failures.csv``, as locust's ``--csv`` writes them."""
    rows: list[RouteStats] = []
    total: RouteStats | None = None
    with Path(f"{prefix}_stats.csv").open(newline="") as stats:
        for row in csv.DictReader(stats):
            parsed = RouteStats(
                method=row.get("Type") or "",
                name=row["Name"],
                requests=int(_number(row.get("Request Count"))),
                failures=int(_number(row.get("Failure Count"))),
                per_second=_number(row.get("Requests/s")),
                p50_ms=_number(row.get("50%")),
                p95_ms=_number(row.get("95%")),
                p99_ms=_number(row.get("99%")),
            )
            if parsed.name == AGGREGATED:
                total = parsed
            else:
                rows.append(parsed)
    failures: list[Failure] = []
    failures_csv = Path(f"{prefix}_failures.csv")
    if failures_csv.exists():
        with failures_csv.open(newline="") as lines:
            failures = [
                Failure(row["Method"], row["Name"], row["Error"], int(_number(row["Occurrences"])))
                for row in csv.DictReader(lines)
            ]
    if total is None:
        raise ValueError(f"{prefix}_stats.csv has no {AGGREGATED} row")
    return RunStats(profile, system, tuple(rows), total, tuple(failures))


def render(run: RunStats, users: int, seconds: float) -> str:
    """Per route: requests, failures, req/s and the percentiles; then what failed."""
    width = max([len(r.label) for r in run.routes] + [len("all routes")])
    lines = [
        f"{run.profile} profile against {run.system}: {users} users, {seconds:.0f} s",
        f"{'route':<{width}}  {'requests':>8}  {'failures':>8}  {'req/s':>7}  {'p50 ms':>7}  "
        f"{'p95 ms':>7}  {'p99 ms':>7}",
    ]
    for row in [*run.routes, run.total]:
        label = "all routes" if row is run.total else row.label
        lines.append(
            f"{label:<{width}}  {row.requests:>8}  {row.failures:>8}  {row.per_second:>7.1f}  "
            f"{row.p50_ms:>7.0f}  {row.p95_ms:>7.0f}  {row.p99_ms:>7.0f}"
        )
    lines.append(f"failures: {run.total.failures} of {run.total.requests} requests")
    lines += [
        f"  {f.occurrences:>6} x {f.method} {f.name}: {f.error}"
        for f in sorted(run.failures, key=lambda f: -f.occurrences)
    ]
    return "\n".join(lines)


def render_ratios(ours: RunStats, peer: RunStats) -> str:
    """ours/peer for every route both ran and for all routes: above 1 is better for req/s and
    worse for the latencies."""
    lines = [
        "seed-000 profile, ours/peer (req/s: higher is better; p50, p99: lower is better)",
        f"{'route':<22}  {'req/s':>7}  {'p50':>7}  {'p99':>7}",
    ]
    pairs: list[tuple[str, RouteStats, RouteStats]] = []
    for row in ours.routes:
        other = peer.route(row.method, row.name)
        if other is not None:
            pairs.append((row.label, row, other))
    pairs.append(("all routes", ours.total, peer.total))
    for label, mine, theirs in pairs:
        lines.append(
            f"{label:<22}  {_ratio(mine.per_second, theirs.per_second)}  "
            f"{_ratio(mine.p50_ms, theirs.p50_ms)}  {_ratio(mine.p99_ms, theirs.p99_ms)}"
        )
    return "\n".join(lines)


def _ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:>6.2f}x" if peer else f"{'n/a':>7}"


def routes_of(runs: Sequence[RunStats]) -> set[tuple[str, str]]:
    return {(r.method, r.name) for run in runs for r in run.routes if r.requests}
