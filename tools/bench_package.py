"""Deployment zip sizes and cold-start imports, each service beside a bare Chalice hello-world.

``python -m tools.bench_package [--stage dev] [--runs 7]`` packages the services (``tools.package``)
and a one-route Chalice app with the same tool, unpacks each ``deployment.zip`` alone into an
empty folder and, in fresh interpreters that see only that folder plus what the Lambda runtime
provides (boto3 and its dependencies), times ``import app`` -- the part of a Lambda cold start
that the code controls. It prints the median of the runs and the ratio to the hello-world.

The same harness (:func:`unpack`, :func:`runtime_dir`, :func:`run_isolated`) is what
``tests/deploy`` uses to prove each zip is complete: a module missing from the zip fails there
exactly as it would on Lambda, because nothing else is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import package
from tools.services import ROOT, SERVICES, ServiceDef

# What the Lambda Python runtime puts on sys.path besides the function's code: the AWS SDK and
# the packages it depends on. The versions there are AWS's, not ours; these are the venv's.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")

# Runs in the child: only the unpacked zip and the runtime folder on sys.path (-I -S: no site,
# no user site, no PYTHON* variables), like /var/task and /var/runtime on Lambda.
_CHILD_PRELUDE = """
import sys, time
sys.path[:0] = {paths!r}
"""


def unpack(zip_path: Path, into: Path) -> Path:
    """Extract ``zip_path`` alone into the empty folder ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    if any(into.iterdir()):
        raise ValueError(f"{into} is not empty")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(into)  # our own build output, not an untrusted archive
    return into


def runtime_dir(into: Path) -> Path:
    """A folder holding (links to) the packages the Lambda runtime provides, and nothing else."""
    into.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name} is not installed in this environment")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        link = into / source.name
        if not link.exists():
            link.symlink_to(source, target_is_directory=source.is_dir())
    return into


def run_isolated(
    code: str,
    task_dir: Path,
    runtime: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh ``python -I -S`` whose ``sys.path`` starts with the task folder
    and the runtime folder only; the working directory is the task folder, as on Lambda."""
    prelude = _CHILD_PRELUDE.format(paths=[str(task_dir), str(runtime)])
    child_env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", **(env or {})}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + code],
        cwd=task_dir,
        env=child_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


IMPORT_TIMER = """
started = time.perf_counter()
import importlib
module = importlib.import_module({module!r})
handler = getattr(module, {attribute!r})
elapsed = time.perf_counter() - started
print(elapsed)
"""


def cold_import_seconds(
    task_dir: Path, runtime: Path, handler: str, env: Mapping[str, str], runs: int
) -> list[float]:
    """``runs`` fresh-interpreter timings of importing the handler (``module.attribute``)."""
    module, _, attribute = handler.partition(".")
    timings = []
    # One discarded run first: it only warms the page cache for the unpacked files, which
    # would otherwise make the first sample an outlier of disk reads, not of imports.
    for run in range(runs + 1):
        result = run_isolated(
            IMPORT_TIMER.format(module=module, attribute=attribute), task_dir, runtime, env
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"import of {handler} failed in {task_dir}:\n{result.stderr[-3000:]}"
            )
        if run:
            timings.append(float(result.stdout.strip().splitlines()[-1]))
    return timings


HELLO_APP = """import boto3
from chalice import Chalice

app = Chalice(app_name="hello")


@app.route("/")
def index():
    return {"hello": "world", "boto3": boto3.__version__}
"""
HELLO_CONFIG = {"version": "2.0", "app_name": "hello", "stages": {"dev": {}}}


def package_hello(workdir: Path, out: Path) -> Path:
    """A bare Chalice app that imports boto3 (from the runtime, as ours do), packaged by the same
    ``chalice package``: the floor any Chalice function that talks to AWS pays."""
    project = workdir / "hello"
    (project / ".chalice").mkdir(parents=True, exist_ok=True)
    (project / "app.py").write_text(HELLO_APP)
    (project / ".chalice" / "config.json").write_text(json.dumps(HELLO_CONFIG))
    (project / "requirements.txt").write_text("")  # boto3 comes from the runtime, as for ours
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from chalice.cli import main; main()",
            "--project-dir",
            str(project),
            "package",
            "--stage",
            "dev",
            str(out),
        ],
        env={**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"packaging the hello-world failed:\n{result.stderr[-3000:]}")
    return out / "deployment.zip"


# Environment a handler's import may read; values are inert (imports must not call AWS).
IMPORT_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "POWERTOOLS_SERVICE_NAME": "bench",
    "LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Measurement:
    name: str
    zip_bytes: int
    unpacked_bytes: int
    import_seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.import_seconds)


def _unpacked_size(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist())


def measure(
    name: str, zip_path: Path, handler: str, workdir: Path, runtime: Path, runs: int
) -> Measurement:
    task = workdir / f"task-{zip_path.parent.name}"
    if not task.exists():
        unpack(zip_path, task)
    timings = cold_import_seconds(task, runtime, handler, IMPORT_ENV, runs)
    return Measurement(name, zip_path.stat().st_size, _unpacked_size(zip_path), timings)


def handler_of(template: Mapping[str, Any]) -> str:
    return str(template["Resources"][package.FUNCTION]["Properties"]["Handler"])


def report(rows: Sequence[Measurement], baseline: Measurement, floor: Measurement) -> str:
    lines = [
        f"{'artifact':14} {'zip MB':>7} {'x hello':>8} {'unzipped MB':>12} "
        f"{'import ms (median)':>19} {'x hello':>8} {'min-max ms':>14}",
    ]
    for row in [floor, baseline, *rows]:
        lines.append(
            f"{row.name:14} {row.zip_bytes / 1e6:7.2f} {row.zip_bytes / baseline.zip_bytes:8.1f} "
            f"{row.unpacked_bytes / 1e6:12.2f} {row.median * 1000:19.0f} "
            f"{row.median / baseline.median:8.1f} "
            f"{min(row.import_seconds) * 1000:6.0f}-{max(row.import_seconds) * 1000:<6.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per artifact")
    args = parser.parse_args(argv)
    services: Sequence[ServiceDef] = [s for s in SERVICES if (s.directory / "app.py").exists()]
    out_root = ROOT / "build" / "bench"
    workdir = Path(tempfile.mkdtemp(prefix="bench-package-"))
    try:
        built = package.package_all(args.stage, out_root / args.stage, services)
        hello_zip = package_hello(workdir, out_root / "hello")
        runtime = runtime_dir(workdir / "runtime")
        # The floor: Chalice alone; the baseline: the hello-world, which also imports boto3.
        floor = measure("chalice only", hello_zip, "chalice.Chalice", workdir, runtime, args.runs)
        baseline = measure("hello+boto3", hello_zip, "app.app", workdir, runtime, args.runs)
        rows = [
            measure(
                p.service.name, p.zip_path, handler_of(p.template()), workdir, runtime, args.runs
            )
            for p in built
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cold import of the handler from the unzipped package, median of {args.runs} runs")
    print(report(rows, baseline, floor))
    print(
        "ratios are to hello+boto3: a one-route Chalice app importing boto3, packaged the same way"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
