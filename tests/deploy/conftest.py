"""Fixtures of the deploy checks: every service packaged once per session, as `make package` does.

Packaging runs the real ``chalice package`` (pip downloads manylinux wheels from PyPI on a cold
Chalice cache: about 10 s per service here, about 1 s each when ``.chalice/deployments`` already
holds a build of the same requirements and code).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools import eventstack, observability, package
from tools.bench_package import runtime_dir

STAGE = "dev"


@pytest.fixture(scope="session")
def svckit_at_packaging() -> dict[str, bytes]:
    """The shared library's sources as packaging found them (someone may edit them meanwhile)."""
    return {f"svckit/{p.name}": p.read_bytes() for p in package.SVCKIT_SOURCE.glob("*.py")}


@pytest.fixture(scope="session")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, svckit_at_packaging: dict[str, bytes]
) -> dict[str, package.Packaged]:
    out = tmp_path_factory.mktemp("build") / STAGE
    started = time.perf_counter()
    built = package.package_all(STAGE, out)
    print(f"\npackaged {len(built)} services in {time.perf_counter() - started:.1f}s")
    return {p.service.name: p for p in built}


@pytest.fixture(scope="session")
def bus_template_path(packaged: dict[str, package.Packaged]) -> Path:
    """The bus stack's template, as packaging wrote it beside the services'."""
    root = next(iter(packaged.values())).directory.parent
    return root / eventstack.EVENTS_STACK_PART / eventstack.TEMPLATE_FILE


@pytest.fixture(scope="session")
def observability_template_path(packaged: dict[str, package.Packaged]) -> Path:
    """The observability stack's template, as packaging wrote it beside the services'."""
    root = next(iter(packaged.values())).directory.parent
    return root / observability.STACK_PART / observability.TEMPLATE_FILE


@pytest.fixture(scope="session")
def templates(packaged: dict[str, package.Packaged]) -> dict[str, dict[str, Any]]:
    return {name: p.template() for name, p in packaged.items()}


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """boto3 and its dependencies alone, standing in for the Lambda runtime's /var/runtime."""
    return runtime_dir(tmp_path_factory.mktemp("lambda-runtime"))
