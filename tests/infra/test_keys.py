"""infra/keys.py on moto's in-process AWS, and the stage's names (tools/stages.py): the token keys
are made once, survive redeploys, are repaired from the secret, and go with the stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.keys import KeyStore, kids
from svckit import keys
from svckit.tokens import TokenIssuer, TokenVerifier
from tools.services import USER
from tools.stages import LOCALSTACK_ENDPOINT, Naming, StageNameError, localstack_environment

pytestmark = pytest.mark.deploy

NAMING = Naming("dev")


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def store(aws: Any, said: list[str] | None = None) -> KeyStore:
    say = said.append if said is not None else lambda _: None
    return KeyStore(aws.client("secretsmanager"), aws.client("ssm"), NAMING, say)


def jwks(aws: Any) -> dict[str, Any]:
    return dict(aws.client("ssm").get_parameter(Name=NAMING.jwks_parameter)["Parameter"])


def test_key_names_come_from_the_stage_name_alone() -> None:
    assert NAMING.signing_key_secret == "shop/dev/jwt-signing-key"
    assert NAMING.jwks_parameter == "/shop/dev/jwt-jwks"
    assert Naming("prod").signing_key_secret == "shop/prod/jwt-signing-key"
    # Nothing in the stage's config names the key: the stack hands the function the ARN.
    assert USER.stage_env("dev")["JWT_SIGNING_KEY"] == "set-by-deploy"


def test_keys_are_created_and_the_public_half_verifies_the_private_half(aws: Any) -> None:
    assert store(aws).ensure().created
    pem = aws.client("secretsmanager").get_secret_value(SecretId=NAMING.signing_key_secret)
    token = TokenIssuer(pem["SecretString"], ttl_seconds=60).issue("alice")
    assert jwks(aws)["Type"] == "String"
    assert TokenVerifier(jwks(aws)["Value"]).verify(token).username == "alice"


def test_a_second_deploy_keeps_the_key_and_the_parameter(aws: Any) -> None:
    first = store(aws).ensure()
    before = jwks(aws)["Version"]
    second = store(aws).ensure()
    assert (second.created, second.secret_arn) == (False, first.secret_arn)
    assert jwks(aws)["Version"] == before


def test_no_key_material_is_said(aws: Any) -> None:
    said: list[str] = []
    store(aws, said).ensure()
    pem = aws.client("secretsmanager").get_secret_value(SecretId=NAMING.signing_key_secret)
    text = "\n".join(said)
    assert said
    assert pem["SecretString"].splitlines()[1] not in text
    assert json.loads(jwks(aws)["Value"])["keys"][0]["x"] not in text


@pytest.mark.parametrize("damage", ["deleted", "stale"])
def test_a_missing_or_stale_public_key_is_rebuilt_from_the_secret(aws: Any, damage: str) -> None:
    store(aws).ensure()
    good, ssm = jwks(aws)["Value"], aws.client("ssm")
    if damage == "deleted":
        ssm.delete_parameter(Name=NAMING.jwks_parameter)
    else:
        other = keys.new_key_material()[1]
        ssm.put_parameter(Name=NAMING.jwks_parameter, Value=other, Type="String", Overwrite=True)
    assert not store(aws).ensure().created
    assert json.loads(jwks(aws)["Value"]) == json.loads(good)


def test_a_jwks_listing_more_keys_during_a_rotation_is_kept(aws: Any) -> None:
    store(aws).ensure()
    rotating = json.loads(jwks(aws)["Value"])
    rotating["keys"] += json.loads(keys.new_key_material()[1])["keys"]
    aws.client("ssm").put_parameter(
        Name=NAMING.jwks_parameter, Value=json.dumps(rotating), Type="String", Overwrite=True
    )
    store(aws).ensure()
    assert json.loads(jwks(aws)["Value"]) == rotating


def test_a_secret_scheduled_for_deletion_is_restored(aws: Any) -> None:
    arn = store(aws).ensure().secret_arn
    aws.client("secretsmanager").delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    assert store(aws).ensure().secret_arn == arn
    described = aws.client("secretsmanager").describe_secret(SecretId=arn)
    assert "DeletedDate" not in described


def test_key_teardown_removes_both_and_a_new_deploy_gets_a_new_key(aws: Any) -> None:
    store(aws).ensure()
    old = jwks(aws)["Value"]
    store(aws).destroy()
    store(aws).destroy()  # nothing left: still fine
    with pytest.raises(aws.client("ssm").exceptions.ParameterNotFound):
        jwks(aws)
    listed = aws.client("secretsmanager").list_secrets()["SecretList"]
    assert NAMING.signing_key_secret not in [s["Name"] for s in listed]
    assert store(aws).ensure().created
    assert kids(jwks(aws)["Value"]) != kids(old)


@pytest.mark.parametrize("stage", ["Dev", "dev_1", "", "a" * 17, "1dev"])
def test_stage_names_that_cannot_name_resources_are_refused(stage: str) -> None:
    with pytest.raises(StageNameError):
        Naming(stage)


def test_names_keep_stages_apart() -> None:
    assert Naming("dev").stack(USER) == "shop-dev-user-api" != Naming("prod").stack(USER)


def test_localstack_mode_never_sends_real_credentials() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_SECRET_ACCESS_KEY": "real",
           "AWS_SESSION_TOKEN": "t", "AWS_PROFILE": "prod"}  # fmt: skip
    assert localstack_environment(env) == LOCALSTACK_ENDPOINT == "http://127.0.0.1:4566"
    assert env["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL_S3"] == LOCALSTACK_ENDPOINT
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("test", "test")
    assert "AWS_SESSION_TOKEN" not in env
    assert "AWS_PROFILE" not in env


def test_localstack_mode_honours_a_given_endpoint() -> None:
    assert localstack_environment({"AWS_ENDPOINT_URL": "http://10.0.0.2:4599"}).endswith(":4599")
