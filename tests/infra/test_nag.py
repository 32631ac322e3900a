"""cdk-nag's AwsSolutions checks (and CDK's own CloudFormation validation) on every stack.

cdk-nag 3 is a CDK validation plugin (``Validations.of(app).add_plugins``), not an aspect: its
findings go to the cloud assembly's ``validation-report.json``, an unacknowledged error fails the
synth, and acknowledgements are CDK's ``Validations.of(construct).acknowledge`` (beside each
resource in infra/, each with its reason).
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs

from infra import app as infra_app

pytestmark = pytest.mark.deploy


def _errors(report: Path) -> list[str]:
    data = json.loads(report.read_text())
    return [
        f"{plugin['pluginName']}: {violation['ruleName']}"
        for plugin in data["pluginReports"]
        for violation in plugin["violations"]
        if violation["severity"] == "error"
    ]


def test_no_finding_is_left_unacknowledged(stage, outdir) -> None:
    assert stage.stacks  # the session's synth ran with the checks (tests/infra/conftest.py)
    assert _errors(outdir / infra_app.VALIDATION_REPORT) == []


def test_cloudformation_validation_warns_of_nothing(stage, outdir) -> None:
    data = json.loads((outdir / infra_app.VALIDATION_REPORT).read_text())
    assert [v["ruleName"] for p in data["pluginReports"] for v in p["violations"]] == []


def test_the_checks_fail_a_synth_with_a_finding(tmp_path) -> None:
    """The same checks as the stage's, on a queue with no dead-letter queue (AwsSolutions-SQS3):
    proof that the plugin runs and refuses, so the two tests above can fail."""
    app = cdk.App(outdir=str(tmp_path))
    infra_app.add_checks(app)
    aws_sqs.Queue(cdk.Stack(app, "Probe"), "Queue", enforce_ssl=True)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    assert "AwsSolutions: AwsSolutions-SQS3" in _errors(tmp_path / infra_app.VALIDATION_REPORT)
