"""infra/deploy.py's CLI calls: the stage and LocalStack reach the app as CDK context, and the
signing key's ARN reaches the user stack's parameter (offline: nothing is run)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from infra import deploy

pytestmark = pytest.mark.deploy


def test_localstack_deploys_through_cdklocal_with_its_context() -> None:
    command = deploy.cdk_command("deploy", "dev", localstack=True)
    assert command[0].endswith("/.bin/cdklocal")
    assert command[1:6] == ["deploy", "-c", "stage=dev", "-c", "localstack=true"]


def test_aws_deploys_through_cdk_without_localstack_context() -> None:
    command = deploy.cdk_command("deploy", "prod", localstack=False)
    assert command[0].endswith("/.bin/cdk")
    assert "localstack=true" not in command
    assert command[-1].endswith("build/cdk/prod")


def test_signing_key_arn_goes_to_the_user_stack() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:shop/dev/jwt-signing-key-AbCdEf"
    assert deploy.signing_key_parameter("dev", arn) == [
        "--parameters",
        f"shop-dev-user-api:SigningKeySecretArn={arn}",
    ]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    """moto for the keys; the CDK CLI must never run in these tests."""
    ran: list[list[str]] = []
    monkeypatch.setattr(deploy, "_run", ran.append)
    with mock_aws():
        yield ran


def test_an_unknown_stage_is_refused_before_any_key_is_made(aws) -> None:
    assert deploy.main(["deploy", "--stage", "typo"]) == 1
    assert boto3.client("secretsmanager").list_secrets()["SecretList"] == []
    assert aws == []


def test_destroying_an_unknown_stage_still_removes_its_keys(aws) -> None:
    """Keys an older deploy made for a stage whose config section is gone: no stacks to
    destroy (it no longer synthesizes), but a billed secret no other command would remove."""
    secrets, ssm = boto3.client("secretsmanager"), boto3.client("ssm")
    secrets.create_secret(Name="shop/typo/jwt-signing-key", SecretString="pem")
    ssm.put_parameter(Name="/shop/typo/jwt-jwks", Value="{}", Type="String")

    assert deploy.main(["destroy", "--stage", "typo"]) == 0

    assert aws == []
    assert secrets.list_secrets()["SecretList"] == []
    assert ssm.describe_parameters()["Parameters"] == []
