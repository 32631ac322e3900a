"""infra/deploy.py's CLI calls: the stage and LocalStack reach the app as CDK context, and the
signing key's ARN reaches the user stack's parameter (offline: nothing is run)."""

from __future__ import annotations

import pytest

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
