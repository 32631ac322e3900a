"""Each Chalice app packaged by ``chalice package`` in a process of its own (light: no
``aws_cdk``), for the service stacks, the zip checks (``tests/deploy``) and ``make bench``.

Not ``chalice.cdk``: it takes the construct path as the Chalice stage, ignoring config.json's
(aws/chalice#1846, #1979), and imports every app into one process, where the second app got the
first's functions (#2030). Here each app is a ``chalice.cli`` subprocess given ``--stage``.

It packages a staged copy (``build/chalice/.apps/<service>``): svckit must be vendored into
``vendor/`` (Chalice takes only ``app.py``, ``chalicelib/``, ``vendor/``), and one vendored into
the app's folder would be left there by an interrupted run. The copy keeps Chalice's cache, so a
warm package takes about a second. ``resources.json`` (with the topology's tables) is the
``--merge-template``, keeping the logical ids of the stacks deployed before CDK.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.utils import to_cfn_resource_name

from tools.services import ROOT, ServiceDef

SVCKIT_SOURCE = ROOT / "lib" / "svckit" / "svckit"
STAGING_DIR = ROOT / "build" / "chalice" / ".apps"  # a stage name starts with a letter
PACKAGE_DIR = ROOT / "build" / "chalice"  # <stage>/<service>/{sam.json,deployment.zip}
APP_SOURCES = ("app.py", "requirements.txt", "chalicelib")  # what Chalice takes, but vendor/
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
KEEP_CACHED_PACKAGES = 3  # per app, in .chalice/deployments (each is several MB)
API_FUNCTION = "APIHandler"  # Chalice's logical id for the REST API's function


def function_id(handler: str) -> str:
    """The logical id Chalice gives ``handler``'s function (CamelCase of its name)."""
    return to_cfn_resource_name(handler)


def event_source_id(handler: str, kind: str) -> str:
    """The key of the SAM event Chalice gives ``handler`` (``kind``: dynamodb or sqs)."""
    return to_cfn_resource_name(f"{handler}-{kind}-event-source")


def function_suffix(handler: str) -> str:
    """What follows the stack's name in an event function's name: ``-relay-user-changes``."""
    return "-" + handler.replace("_", "-")


@dataclass(frozen=True)
class PackagedApp:
    """One app's ``chalice package`` output: ``sam.json`` and ``deployment.zip``."""

    service: ServiceDef
    directory: Path

    template_path = property(lambda self: self.directory / "sam.json")
    zip_path = property(lambda self: self.directory / "deployment.zip")

    def template(self) -> dict[str, Any]:
        return dict(json.loads(self.template_path.read_text()))

    def handler(self, logical_id: str = API_FUNCTION) -> str:
        return str(self.template()["Resources"][logical_id]["Properties"]["Handler"])


def _replace(source: Path, target: Path) -> None:
    """``target`` made a copy of ``source`` (a file or a folder), or removed if none."""
    if target.is_dir():
        shutil.rmtree(target)
    target.unlink(missing_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=IGNORED)
    elif source.exists():
        shutil.copyfile(source, target)


def package_app(service: ServiceDef, stage: str, out_root: Path) -> PackagedApp:
    """``chalice package --stage <stage>`` one app into ``out_root/<service>/``, locked per app
    (``make synth`` while the tests synthesize); different apps package in parallel."""
    staged, out_dir = STAGING_DIR / service.name, out_root / service.name
    staged.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ to change the hash
    # Chalice builds a boto3 session even to package; it needs a region but never calls AWS.
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    with open(STAGING_DIR / f".{service.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # The app's sources mirrored into ``staged``, keeping only Chalice's cache from before.
        for name in APP_SOURCES:
            _replace(service.directory / name, staged / name)
        config_dir = staged / ".chalice"
        config_dir.mkdir(parents=True, exist_ok=True)
        for stale in config_dir.glob("*.json"):
            stale.unlink()
        for source in (service.directory / ".chalice").glob("*.json"):
            shutil.copyfile(source, config_dir / source.name)
        _replace(SVCKIT_SOURCE, staged / "vendor" / "svckit")
        # The tables the topology adds too (ServiceDef.resources, the definition make run uses).
        own_path = service.directory / "resources.json"
        merged = json.loads(own_path.read_text()) if own_path.exists() else {}
        merged["Resources"] = service.resources()
        (staged / ".merge.json").write_text(json.dumps(merged, indent=2))
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", "from chalice.cli import main; main()",
             "--project-dir", str(staged), "package", "--stage", stage,
             "--merge-template", str(staged / ".merge.json"), str(out_dir)],
            env=env, capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
        # Chalice adds a multi-MB zip per change of code and never deletes one.
        cache = (staged / ".chalice" / "deployments").glob("*.zip")
        for old in sorted(cache, key=lambda p: p.stat().st_mtime)[:-KEEP_CACHED_PACKAGES]:
            old.unlink(missing_ok=True)
    if result.returncode != 0:
        output = f"({result.returncode})\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise RuntimeError(f"{service.name}: chalice package failed {output}")
    return PackagedApp(service, out_dir)


def package_apps(
    services: Iterable[ServiceDef], stage: str, out_root: Path
) -> dict[str, PackagedApp]:
    """Every app packaged at once: each is a subprocess that mostly waits on pip or zip."""
    services = list(services)
    with ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
        packaged = pool.map(lambda s: package_app(s, stage, out_root), services)
        return {p.service.name: p for p in packaged}


def content_hash(path: Path) -> str:
    """A hash of what a zip holds (names, CRCs, sizes), not of its bytes: a rebuild of the same
    code has new timestamps, and hashed by bytes every synth would update every function."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
    return digest.hexdigest()
