"""Fixtures of the zip checks: every app packaged once per session (``infra/packaging.py``, the
real ``chalice package``: about 10 s per app on a cold Chalice cache, about 1 s warm) and the
stage synthesized from those packages, whose stacks give each function its environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.app import Stage
from tests.infra.conftest import STAGE, outdir, packaged_apps, stage  # noqa: F401 - fixtures
from tools.bench_package import runtime_dir


@pytest.fixture(scope="session")
def templates(stage: Stage) -> dict[str, dict[str, Any]]:  # noqa: F811 - the fixture above
    """Each service's stack as CloudFormation receives it."""
    return {name: Template.from_stack(s).to_json() for name, s in stage.services.items()}


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """boto3 and its dependencies alone, standing in for the Lambda runtime's /var/runtime."""
    return runtime_dir(tmp_path_factory.mktemp("lambda-runtime"))
