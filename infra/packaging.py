"""Each Chalice app packaged by ``chalice package`` in a process of its own, for the CDK app
(``infra/chalice_app.py``), the zip checks (``tests/deploy``) and ``make bench``.

Not ``chalice.cdk``: it uses the construct path as the Chalice stage, ignoring the stage of
``config.json`` (aws/chalice#1846, #1979), and imports every app into one process, where the
second app got the first one's functions (#2030). Here each app is packaged by its own
``python -m chalice.cli`` subprocess with ``--stage`` given explicitly (the three in parallel).
Light: no ``aws_cdk`` import.

The app is packaged from a staged copy (``build/chalice/.apps/<service>``) rather than from its
own folder: ``lib/svckit`` must be vendored into ``vendor/`` (Chalice collects only ``app.py``,
``chalicelib/`` and ``vendor/``), and a copy vendored into the source folder would be left
behind there by an interrupted run. The staged copy keeps its ``.chalice/deployments`` cache,
so a warm package takes about a second.

The service's ``resources.json`` is Chalice's ``--merge-template`` (with the tables
``tools/topology.py`` adds): its tables, data-access policies and environment wiring keep the
logical ids of the stacks deployed before CDK, which lets an existing stage update in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.services import ROOT, ServiceDef

SVCKIT_SOURCE = ROOT / "lib" / "svckit" / "svckit"
STAGING_DIR = ROOT / "build" / "chalice" / ".apps"  # a stage name starts with a letter
PACKAGE_DIR = ROOT / "build" / "chalice"  # <stage>/<service>/{sam.json,deployment.zip}
# What Chalice packages from an app folder (besides vendor/, which is made here).
APP_SOURCES = ("app.py", "requirements.txt", "chalicelib")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
KEEP_CACHED_PACKAGES = 3  # per app, in .chalice/deployments (each is several MB)
API_FUNCTION = "APIHandler"  # Chalice's logical id for the REST API's function


class PackageError(RuntimeError):
    """An app did not package; the message carries Chalice's output."""


@dataclass(frozen=True)
class PackagedApp:
    """One app's ``chalice package`` output: ``sam.json`` and ``deployment.zip``."""

    service: ServiceDef
    stage: str
    directory: Path
    seconds: float

    @property
    def template_path(self) -> Path:
        return self.directory / "sam.json"

    @property
    def zip_path(self) -> Path:
        return self.directory / "deployment.zip"

    def template(self) -> dict[str, Any]:
        return dict(json.loads(self.template_path.read_text()))

    def handler(self, logical_id: str = API_FUNCTION) -> str:
        return str(self.template()["Resources"][logical_id]["Properties"]["Handler"])


def merge_template(service: ServiceDef) -> dict[str, Any]:
    """The service's ``resources.json`` with the tables the topology adds (a consumer's
    processed-events table): ``ServiceDef.resources``, the definition ``make run`` uses too."""
    own_path = service.directory / "resources.json"
    own = json.loads(own_path.read_text()) if own_path.exists() else {}
    return {**own, "Resources": service.resources()}


def _stage_sources(service: ServiceDef, staged: Path) -> None:
    """Mirror the app's sources into ``staged``, keeping only Chalice's cache from before."""
    for name in APP_SOURCES:
        target, source = staged / name, service.directory / name
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)
        elif source.exists():
            shutil.copyfile(source, target)
    config_dir = staged / ".chalice"
    config_dir.mkdir(parents=True, exist_ok=True)
    for stale in config_dir.glob("*.json"):
        stale.unlink()
    for source in (service.directory / ".chalice").glob("*.json"):
        shutil.copyfile(source, config_dir / source.name)
    vendored = staged / "vendor" / "svckit"
    if vendored.exists():
        shutil.rmtree(vendored)
    shutil.copytree(SVCKIT_SOURCE, vendored, ignore=IGNORED)


def _chalice_env() -> dict[str, str]:
    env = dict(os.environ)
    # Chalice builds a boto3 session even to package; it needs a region but never calls AWS.
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in vendor/, which would change the hash
    return env


def package_app(
    service: ServiceDef, stage: str, out_root: Path, staging: Path = STAGING_DIR
) -> PackagedApp:
    """``chalice package --stage <stage>`` one app into ``out_root/<service>/``. A lock per
    staged app serialises two packagings of the same app (``make synth`` while the tests
    synthesize); different apps package in parallel."""
    staged, out_dir = staging / service.name, out_root / service.name
    staged.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(staging / f".{service.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _stage_sources(service, staged)
        merge_path = staged / ".merge.json"
        merge_path.write_text(json.dumps(merge_template(service), indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", "from chalice.cli import main; main()",
             "--project-dir", str(staged), "package", "--stage", stage,
             "--merge-template", str(merge_path), str(out_dir)],
            env=_chalice_env(), capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        # Chalice adds a multi-MB zip per change of code and never deletes one.
        cache = (staged / ".chalice" / "deployments").glob("*.zip")
        for old in sorted(cache, key=lambda p: p.stat().st_mtime)[:-KEEP_CACHED_PACKAGES]:
            old.unlink(missing_ok=True)
    if result.returncode != 0:
        raise PackageError(
            f"{service.name}: chalice package failed ({result.returncode})\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return PackagedApp(service, stage, out_dir, time.perf_counter() - started)


def package_apps(
    services: Iterable[ServiceDef], stage: str, out_root: Path, staging: Path = STAGING_DIR
) -> dict[str, PackagedApp]:
    """Every app packaged at once: each is a subprocess that mostly waits on pip or zip."""
    services = list(services)
    with ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
        futures = [pool.submit(package_app, s, stage, out_root, staging) for s in services]
        return {future.result().service.name: future.result() for future in futures}


def content_hash(path: Path) -> str:
    """A hash of what a zip holds (names, CRCs, sizes), not of its bytes: a rebuild of the same
    code has new timestamps, and hashed by bytes every synth would update every function."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
    return digest.hexdigest()
