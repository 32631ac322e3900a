"""``make load`` (``python -m tools.load``): locust against the local system, then the data check,
then seed 000's profile against ours and against the naive peer, with the ratios.

Profiles (``--profile``, ``PROFILE=`` in make; both by default):

* ``mix``: ``MixUser`` (``tools/load/locustfile.py``) through our gateway, ramping to
  ``--users`` (50) at ``--spawn-rate`` (5/s) for ``--duration`` (60 s); then the data check
  (``tools.load.check``): every 201 product readable, every user's points exact once the events
  have settled. A failed check makes the exit status 1.
* ``seed``: ``SeedUser`` (register, login, add_product, get_products: the peer's only routes)
  with the same users and time against our gateway, then against ``../shared/peer_flask``
  (started by ``tools.bench_local``'s helpers, in its own virtualenv), and the ratios
  ours/peer of req/s, p50 and p99. Note that our ``GET /get_products`` answers a page (100 by
  default, as API.md says) while the peer's answers every product it holds.

Where: its own system on free ports (``LocalSystem``, DynamoDB Local in memory, as
``tools.bench_local`` and the integration tests start it), stopped before the peer runs so the
two never share the cores; or, with ``--target http://127.0.0.1:5000`` (``LOAD_TARGET=``), a
running ``make run`` (whose data then stays). Only 127.0.0.1 is ever a target. Locust runs as a
subprocess (``python -m locust``, headless) so its gevent patching never reaches this process.

Kept under ``.local/load/``: per run ``<profile>-<system>.html`` (locust's report),
``..._stats.csv``, ``..._failures.csv``, ``..._stats_history.csv``, locust's log and the ledger
the data check read. Not part of ``make test``: a measurement, not assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tools import services
from tools.load import stats as load_stats
from tools.load.check import SETTLE_SECONDS, CheckResult, check
from tools.load.ledger import LEDGER_ENV, RUN_ID_ENV, Ledger
from tools.load.routes import USER_CLASS

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
OUT_DIR = services.LOCAL_DIR / "load"
USERS = 50
SPAWN_RATE = 5.0
DURATION_SECONDS = 60
# Users get this long to finish the task they are in when the time is up, so few writes end
# without an answer (those the data check then has to resolve from the store).
STOP_TIMEOUT_SECONDS = 10
# Beyond the run and the stop: locust's start (imports) and its report.
LOCUST_OVERHEAD_SECONDS = 120
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Bounds a mistyped USERS= or DURATION= cannot leave.
MAX_USERS = 500
MAX_DURATION_SECONDS = 1800


class LoadError(RuntimeError):
    """Locust did not run (or left no statistics); the message holds the tail of its log."""


@dataclass(frozen=True)
class Plan:
    users: int = USERS
    spawn_rate: float = SPAWN_RATE
    seconds: int = DURATION_SECONDS
    out_dir: Path = OUT_DIR


@dataclass(frozen=True)
class LocustRun:
    stats: load_stats.RunStats
    ledger: Ledger
    report: Path  # locust's HTML report
    warnings: tuple[str, ...]  # locust's own warnings worth repeating (its CPU running out)


def loopback_url(url: str) -> str:
    """``url`` if it is plain HTTP on this machine, else ValueError: a load pointed elsewhere by
    a typo would be an attack on someone else's service."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK or not parts.port:
        raise ValueError(f"the load target must be http://127.0.0.1:<port>, not {url!r}")
    return f"http://{parts.hostname}:{parts.port}"


def run_locust(profile: str, system: str, host: str, plan: Plan) -> LocustRun:
    """One headless locust run of ``profile``'s users against ``host``; its statistics and the
    ledger of what its writes were told."""
    host = loopback_url(host)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    prefix = plan.out_dir / f"{profile}-{system}"
    ledger_path = plan.out_dir / f"{profile}-{system}.ledger.json"
    log_path = plan.out_dir / f"{profile}-{system}.log"
    report = plan.out_dir / f"{profile}-{system}.html"
    for old in (ledger_path, report, *plan.out_dir.glob(f"{prefix.name}_*.csv")):
        old.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "--users", str(plan.users), "--spawn-rate", str(plan.spawn_rate),
        "--run-time", f"{plan.seconds}s", "--stop-timeout", str(STOP_TIMEOUT_SECONDS),
        "--csv", str(prefix), "--html", str(report), "--only-summary", "--loglevel", "WARNING",
        USER_CLASS[profile],
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(services.ROOT), os.environ.get("PYTHONPATH")])
        ),
        LEDGER_ENV: str(ledger_path),
        RUN_ID_ENV: uuid.uuid4().hex[:6],  # new names each run, so runs on one store never collide
    }
    with log_path.open("w") as log:
        completed = subprocess.run(
            argv,
            cwd=services.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=plan.seconds + STOP_TIMEOUT_SECONDS + LOCUST_OVERHEAD_SECONDS,
            check=False,
        )
    text = log_path.read_text(errors="replace")
    # 1 is locust's "some requests failed"; anything else, or no statistics, is no run at all.
    if completed.returncode not in (0, 1) or not Path(f"{prefix}_stats.csv").exists():
        tail = "\n".join(text.splitlines()[-30:])
        raise LoadError(f"locust exited {completed.returncode} ({log_path}):\n{tail}")
    ledger = Ledger.load(ledger_path) if ledger_path.exists() else Ledger()
    warnings = tuple(
        sorted({line.split("] ", 1)[-1] for line in text.splitlines() if "CPU usage" in line})
    )
    return LocustRun(load_stats.read(prefix, profile, system), ledger, report, warnings)


def points_per_product() -> int:
    """What user_api grants per product on the local stage (API.md: 10 unless the stage says
    otherwise), read from its config so the check follows the stage."""
    return int(services.USER.stage_env("local").get("POINTS_PER_PRODUCT", "10"))


def mix_and_check(
    base_url: str,
    plan: Plan,
    settle_seconds: float = SETTLE_SECONDS,
    say: Callable[[str], None] = print,
) -> tuple[LocustRun, CheckResult]:
    """The mix profile, then the data check of what it wrote (the integration test runs this)."""
    run = run_locust("mix", "ours", base_url, plan)
    return run, check(base_url, run.ledger, points_per_product(), settle_seconds, say)


@contextlib.contextmanager
def our_system(target: str | None, say: Callable[[str], None]) -> Iterator[str]:
    """The gateway to load: ``target`` as given, or a system of our own on free ports."""
    if target:
        say(f"target: {target} (a running system; its data stays)")
        yield target
        return
    from tools.localrun import LocalSystem, Ports  # only when this run starts its own

    say("starting DynamoDB Local, the events endpoint, the three devservers and the workers ...")
    system = LocalSystem(Ports.free())
    system.start()
    try:
        yield system.url(services.GATEWAY)
    finally:
        system.stop()


def _print_run(run: LocustRun, plan: Plan, say: Callable[[str], None]) -> None:
    say(load_stats.render(run.stats, plan.users, plan.seconds))
    for warning in run.warnings:
        say(f"locust: {warning}")
    say(f"report: {run.report}")


def run_profiles(
    profiles: Sequence[str], target: str | None, plan: Plan, say: Callable[[str], None] = print
) -> int:
    """Everything ``make load`` does; the exit status (1 when the data check failed)."""
    exit_status = 0
    seed_ours: LocustRun | None = None
    with our_system(target, say) as gateway:
        if "mix" in profiles:
            say(f"mix profile: {plan.users} users, {plan.spawn_rate:g}/s, {plan.seconds} s ...")
            mix = run_locust("mix", "ours", gateway, plan)
            _print_run(mix, plan, say)
            result = check(gateway, mix.ledger, points_per_product(), SETTLE_SECONDS, say)
            say(result.render())
            exit_status = 0 if result.ok else 1
        if "seed" in profiles:
            say(f"seed-000 profile against ours: {plan.users} users, {plan.seconds} s ...")
            seed_ours = run_locust("seed", "ours", gateway, plan)
            _print_run(seed_ours, plan, say)
    if seed_ours is not None:
        seed_peer = run_peer(plan, say)
        if seed_peer is not None:
            _print_run(seed_peer, plan, say)
            say(load_stats.render_ratios(seed_ours.stats, seed_peer.stats))
    return exit_status


def run_peer(plan: Plan, say: Callable[[str], None]) -> LocustRun | None:
    """The seed profile against the naive peer, started and stopped the way ``make bench``
    does (its own virtualenv, free ports, its process group)."""
    from tools.bench_local import PEER_DIR, peer_python, running_peer

    if not PEER_DIR.is_dir():
        say(f"peer comparison skipped: {PEER_DIR} does not exist")
        return None
    with running_peer(peer_python(say)) as (gateway_port, _product_port, _pid):
        say(f"seed-000 profile against the peer: {plan.users} users, {plan.seconds} s ...")
        return run_locust("seed", "peer", f"http://127.0.0.1:{gateway_port}", plan)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", choices=("mix", "seed", "both"), default="both")
    parser.add_argument("--users", type=int, default=USERS, help=f"peak users ({USERS})")
    parser.add_argument(
        "--spawn-rate", type=float, default=SPAWN_RATE, help="users started per second"
    )
    parser.add_argument("--duration", type=int, default=DURATION_SECONDS, help="seconds per run")
    parser.add_argument(
        "--target",
        default=os.environ.get("LOAD_TARGET") or None,
        help="a running gateway, http://127.0.0.1:<port> (default: start one)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.users <= MAX_USERS or not 1 <= args.duration <= MAX_DURATION_SECONDS:
        parser.error(f"--users must be 1-{MAX_USERS} and --duration 1-{MAX_DURATION_SECONDS}")
    if not 0 < args.spawn_rate <= args.users:
        parser.error("--spawn-rate must be above 0 and at most --users")
    target = None
    if args.target:
        try:
            target = loopback_url(args.target)
        except ValueError as exc:
            parser.error(str(exc))
    profiles = ("mix", "seed") if args.profile == "both" else (args.profile,)
    plan = Plan(args.users, args.spawn_rate, args.duration)
    started = time.monotonic()
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        status = run_profiles(profiles, target, plan, say)
    except LoadError as exc:
        say(f"load: {exc}")
        return 2
    say(f"(total {time.monotonic() - started:.0f} s; reports in {plan.out_dir})")
    return status


if __name__ == "__main__":
    sys.exit(main())
