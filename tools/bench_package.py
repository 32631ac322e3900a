"""Deployment zip sizes and cold-start imports, each service beside a bare Chalice hello-world.

``python -m tools.bench_package [--stage dev] [--runs 7]`` packages the services
(``infra/packaging.py``) and a one-route Chalice app with the same tool, unpacks each
``deployment.zip`` alone into an empty folder and, in fresh interpreters that see only that
folder plus what the Lambda runtime provides (boto3 and its dependencies), times
``import app`` -- the part of a Lambda cold start that the code controls. It prints the median
of the runs and the ratio to the hello-world.

The same harness (:func:`unpack`, :func:`runtime_dir`, :func:`run_isolated`) is what
``tests/deploy`` uses to prove each zip is complete: a module missing from the zip fails there
exactly as it would on Lambda, because nothing else is on ``sys.path``.

It also reports what the metrics cost (``svckit.metrics``): the import of ``svckit.metrics``
(Powertools' EMF provider with it) on top of what a handler imports anyway, timed the same way
in each unpacked package; and the CPU time one request spends in the services' middleware, for
a one-route ``Service`` called through Chalice's own handler with and without the metrics
middleware (every thread's CPU, so the writer thread's write of the EMF line is counted too).
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
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.packaging import package_apps
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


# Modules whose cold-start cost is reported on their own, each imported after what it needs that
# svckit.web imports anyway (Chalice, the logger, the stage...), so the time measured is what
# the module adds: the metrics, and the OpenAPI description (issue 15: at most 5 ms).
ADDED_IMPORTS = {
    "svckit.metrics": ("chalice", "svckit.config", "svckit.logs", "svckit.tokens"),
    "svckit.openapi": ("chalice", "svckit.config", "svckit.validation"),
}
ADDED_IMPORT_TIMER = """
import importlib
for name in {prerequisites!r}:
    importlib.import_module(name)
started = time.perf_counter()
importlib.import_module({module!r})
print(time.perf_counter() - started)
"""


def added_import_seconds(
    module: str, task_dir: Path, runtime: Path, env: Mapping[str, str], runs: int
) -> list[float]:
    """``runs`` fresh-interpreter timings of importing ``module`` from the unpacked package,
    after what the handler imports anyway."""
    code = ADDED_IMPORT_TIMER.format(module=module, prerequisites=ADDED_IMPORTS[module])
    timings = []
    for run in range(runs + 1):  # the first run only warms the page cache
        result = run_isolated(code, task_dir, runtime, env)
        if result.returncode != 0:
            raise RuntimeError(f"import of {module} failed:\n{result.stderr[-3000:]}")
        if run:
            timings.append(float(result.stdout.strip().splitlines()[-1]))
    return timings


# Where a service's lines are written (svckit.logs): in Lambda by the request's own thread, under
# make run by the log writer thread.
WRITERS = {"lambda": "Lambda: lines written by the request's thread",
           "local": "make run: lines written by the log writer thread"}  # fmt: skip


@dataclass(frozen=True)
class MiddlewareCost:
    """Per-request CPU microseconds, median of the rounds, of each (writer, with metrics)
    variant: on the request's own thread, and in the whole process (every thread)."""

    thread: Mapping[tuple[str, bool], float]
    process: Mapping[tuple[str, bool], float]
    emf_bytes: int  # the EMF line one request writes


def middleware_cpu(requests: int = 5000, rounds: int = 7) -> MiddlewareCost:
    """A one-route ``Service`` called through Chalice's handler (``app(event, context)``, as
    Lambda calls it), its log and EMF lines written to a discarded stream, the way Lambda writes
    them and the way ``make run``'s services do. With metrics is the service as shipped;
    without, its metrics middleware is taken out (``metrics.add`` then finds no invocation and
    keeps nothing)."""
    from chalice import Response
    from chalice.local import LambdaContext, LambdaEventConverter, RouteMatcher

    from svckit import logs
    from svckit.web import Service

    def build(writer: str, with_metrics: bool) -> tuple[Any, Any, list[str]]:
        previous = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        if writer == "lambda":  # read once, when the service's logger is made
            os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "bench"
        try:
            service = Service(f"bench_{writer}_{uuid.uuid4().hex[:8]}", ROOT)
        finally:
            if previous is None:
                os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
            else:
                os.environ["AWS_LAMBDA_FUNCTION_NAME"] = previous
        handler = service.log.registered_handler
        assert isinstance(handler, logs.QueuedStreamHandler) == (writer == "local")
        handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - open for the process's life
        written: list[str] = []
        real_write = service.metrics.write

        def keep_one(lines: list[str]) -> None:
            if not written:
                written.extend(lines)
            real_write(lines)

        service.metrics.write = keep_one

        @service.app.route("/items/{item_id}")
        def item(item_id: str) -> Response:
            return Response(body={"id": item_id}, status_code=200)

        if not with_metrics:
            service.app.middleware_handlers = [
                (f, kind) for f, kind in service.app.middleware_handlers
                if f != service.metrics.middleware
            ]  # fmt: skip
        return service.app, handler, written

    def settle(handler: Any) -> None:
        if isinstance(handler, logs.QueuedStreamHandler):
            handler.flush_queue(30)  # the writer thread's share is done, and counted

    converter = LambdaEventConverter(RouteMatcher(["/items/{item_id}"]))
    event = converter.create_lambda_event("GET", "/items/42", {"X-Request-Id": "bench"}, None)
    context = LambdaContext("bench", 128)
    variants = [(writer, metrics) for writer in WRITERS for metrics in (False, True)]
    built = {variant: build(*variant) for variant in variants}
    process: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    thread: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for round_ in range(rounds):
        # Alternated, so that a machine getting busier (or quieter) meanwhile weighs on all.
        for variant in variants if round_ % 2 else variants[::-1]:
            app, handler, _ = built[variant]
            settle(handler)
            started, started_thread = time.process_time(), time.thread_time()
            for _ in range(requests):
                app(event, context)
            thread[variant].append((time.thread_time() - started_thread) / requests * 1e6)
            settle(handler)
            process[variant].append((time.process_time() - started) / requests * 1e6)
    written = built["local", True][2]
    return MiddlewareCost(
        thread={v: statistics.median(t) for v, t in thread.items()},
        process={v: statistics.median(t) for v, t in process.items()},
        emf_bytes=len(written[0]) + 1 if written else 0,
    )


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
    # Handlers' imports log nothing, so nothing here writes; the micro-benchmark's own lines go
    # to a discarded stream. Measured before packaging, on an idle machine.
    cost = middleware_cpu()
    services: Sequence[ServiceDef] = [s for s in SERVICES if (s.directory / "app.py").exists()]
    out_root = ROOT / "build" / "bench"
    workdir = Path(tempfile.mkdtemp(prefix="bench-package-"))
    try:
        built = list(package_apps(services, args.stage, out_root / args.stage).values())
        hello_zip = package_hello(workdir, out_root / "hello")
        runtime = runtime_dir(workdir / "runtime")
        # The floor: Chalice alone; the baseline: the hello-world, which also imports boto3.
        floor = measure("chalice only", hello_zip, "chalice.Chalice", workdir, runtime, args.runs)
        baseline = measure("hello+boto3", hello_zip, "app.app", workdir, runtime, args.runs)
        rows = [
            measure(p.service.name, p.zip_path, p.handler(), workdir, runtime, args.runs)
            for p in built
        ]
        runs = args.runs
        added = {
            module: {
                p.service.name: added_import_seconds(
                    module, workdir / f"task-{p.zip_path.parent.name}", runtime, IMPORT_ENV, runs
                )
                for p in built
            }
            for module in ADDED_IMPORTS
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cold import of the handler from the unzipped package, median of {args.runs} runs")
    print(report(rows, baseline, floor))
    print(
        "ratios are to hello+boto3: a one-route Chalice app importing boto3, packaged the same way"
    )
    print()
    handlers = {r.name: r for r in rows}
    print(report_metrics(added["svckit.metrics"], handlers, cost, args.runs))
    print()
    print(report_added_import("svckit.openapi", added["svckit.openapi"], handlers, args.runs))
    return 0


def report_metrics(
    imports: Mapping[str, list[float]],
    handlers: Mapping[str, Measurement],
    cost: MiddlewareCost,
    runs: int,
) -> str:
    """What the metrics cost, at cold start and per request."""
    lines = [
        "what the metrics cost (svckit.metrics, Powertools' EMF provider):",
        *_import_lines("svckit.metrics", imports, handlers, runs),
        "  per request: CPU of a one-route Service through Chalice's handler, median of rounds",
        f"    {'':32} {'request thread':>15} {'all threads':>12}",
    ]
    for writer, title in WRITERS.items():
        lines.append(f"    {title}")
        for label, with_metrics in (("without metrics", False), ("with metrics", True)):
            lines.append(
                f"      {label:30} {cost.thread[writer, with_metrics]:12.1f} us "
                f"{cost.process[writer, with_metrics]:9.1f} us"
            )
        extra_thread = cost.thread[writer, True] - cost.thread[writer, False]
        extra_process = cost.process[writer, True] - cost.process[writer, False]
        lines.append(f"      {'metrics cost':30} {extra_thread:+12.1f} us {extra_process:+9.1f} us")
    lines.append(f"    (one EMF line of {cost.emf_bytes} bytes a request)")
    return "\n".join(lines)



def _import_lines(
    module: str, imports: Mapping[str, list[float]], handlers: Mapping[str, Measurement],
    runs: int,
) -> list[str]:  # fmt: skip
    lines = [
        f"  cold start: import of {module} after what the handler imports anyway, "
        f"median of {runs} runs"
    ]
    for name, timings in imports.items():
        median = statistics.median(timings) * 1000
        share = median / (handlers[name].median * 1000) if name in handlers else 0.0
        lines.append(
            f"    {name:12} {median:6.1f} ms ({share:.1%} of the handler's import, "
            f"{min(timings) * 1000:.1f}-{max(timings) * 1000:.1f} ms)"
        )
    return lines


def report_added_import(
    module: str, imports: Mapping[str, list[float]], handlers: Mapping[str, Measurement],
    runs: int,
) -> str:  # fmt: skip
    """What the OpenAPI description costs at cold start: its module's import (the document
    itself is built at the first ``GET /openapi.json``, never at import)."""
    return "\n".join(
        [f"what the OpenAPI description costs ({module}):",
         *_import_lines(module, imports, handlers, runs)]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
