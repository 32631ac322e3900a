"""The adapter between a Chalice app and a CDK stack: ``chalice package`` in a process of its own,
its SAM template taken in with ``CfnInclude`` and its zip as an ``Asset``.

Not ``chalice.cdk``: it uses the construct path as the Chalice stage, ignoring the stage of
``config.json`` (aws/chalice#1846, #1979), and imports every app into one process, where the
second app got the first one's functions (#2030). Here each app is packaged by its own
``python -m chalice.cli`` subprocess with ``--stage`` given explicitly, and nothing of Chalice is
imported into the CDK app (the three run in parallel).

The app is packaged from a staged copy (``build/chalice/.apps/<service>``) rather than from its own
folder: ``lib/svckit`` must be vendored into ``vendor/`` (Chalice collects only ``app.py``,
``chalicelib/`` and ``vendor/``), and vendoring into the source folder would race with
``tools/package.py`` (``make package``, tests/deploy) removing its own copy. The staged copy keeps
its ``.chalice/deployments`` cache, so a warm package takes about a second.

The service's ``resources.json`` is Chalice's ``--merge-template`` (with the tables
``tools/topology.py`` adds): its tables, data-access policies and environment wiring keep the
logical ids of today's stacks, which is what lets an existing stage update in place. Its
parameters are replaced by CDK values (``parameters``) or stay parameters of the stack.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import aws_iam, aws_s3_assets, aws_sam
from aws_cdk import cloudformation_include as cfn_include
from constructs import Construct

from tools import package as chalice_package
from tools.services import ROOT, ServiceDef

STAGING_DIR = ROOT / "build" / "chalice" / ".apps"  # a stage name starts with a letter
PACKAGE_DIR = ROOT / "build" / "chalice"  # <stage>/<service>/{sam.json,deployment.zip}
# What Chalice packages from an app folder (besides vendor/, which is made here).
APP_SOURCES = ("app.py", "requirements.txt", "chalicelib")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


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


def merge_template(service: ServiceDef) -> dict[str, Any]:
    """The service's ``resources.json`` with the tables the topology adds (a consumer's
    processed-events table): ``ServiceDef.resources``, the definition ``make run`` uses too."""
    own_path = service.directory / "resources.json"
    own = json.loads(own_path.read_text()) if own_path.exists() else {}
    return {**own, "Resources": service.resources()}


def _stage_sources(service: ServiceDef, staged: Path) -> None:
    """Mirror the app's sources into ``staged``, keeping only Chalice's cache from before."""
    for name in APP_SOURCES:
        target = staged / name
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        source = service.directory / name
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
    shutil.copytree(chalice_package.SVCKIT_SOURCE, vendored, ignore=IGNORED)


def package_app(
    service: ServiceDef, stage: str, out_root: Path, staging: Path = STAGING_DIR
) -> PackagedApp:
    """``chalice package --stage <stage>`` one app into ``out_root/<service>/``, in a subprocess.

    A lock per staged app serialises two packagings of the same app (``make synth`` while the
    tests synthesize); different apps package in parallel.
    """
    staged = staging / service.name
    staged.mkdir(parents=True, exist_ok=True)
    out_dir = out_root / service.name
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
            env=chalice_package._chalice_env(),
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        # Chalice adds a multi-MB zip per change of code and never deletes one.
        cache = sorted(
            (staged / ".chalice" / "deployments").glob("*.zip"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in cache[chalice_package.KEEP_CACHED_PACKAGES :]:
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


class ChaliceApp(Construct):
    """A packaged Chalice app in a stack: its SAM template included as it is (logical ids kept)
    and every function's ``CodeUri`` pointing at the zip's asset.

    The stack must carry the SAM transform (``ServiceStack`` adds it). ``parameters`` replaces
    template parameters by values of the CDK app (another stack's URL, say).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        packaged: PackagedApp,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.packaged = packaged
        self.template = cfn_include.CfnInclude(
            self,
            "Template",
            template_file=str(packaged.template_path),
            parameters=dict(parameters or {}),
        )
        self.code = aws_s3_assets.Asset(
            self, "Code", path=str(packaged.zip_path), asset_hash=content_hash(packaged.zip_path)
        )
        raw = packaged.template()["Resources"]
        self.function_ids = sorted(
            logical_id
            for logical_id, resource in raw.items()
            if resource["Type"] == "AWS::Serverless::Function"
        )
        for logical_id in self.function_ids:
            self.function(logical_id).code_uri = aws_sam.CfnFunction.S3LocationProperty(
                bucket=self.code.s3_bucket_name, key=self.code.s3_object_key
            )

    def function(self, logical_id: str) -> aws_sam.CfnFunction:
        resource = self.template.get_resource(logical_id)
        assert isinstance(resource, aws_sam.CfnFunction), logical_id
        return resource

    def role(self, logical_id: str) -> aws_iam.CfnRole:
        resource = self.template.get_resource(logical_id)
        assert isinstance(resource, aws_iam.CfnRole), logical_id
        return resource

    def rest_api(self, logical_id: str) -> aws_sam.CfnApi:
        resource = self.template.get_resource(logical_id)
        assert isinstance(resource, aws_sam.CfnApi), logical_id
        return resource
