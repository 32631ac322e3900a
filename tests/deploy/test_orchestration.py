"""tools/deploy.py against moto: keys, bucket, stacks, order, wiring and teardown.

The three call layers (KeyStore, ArtifactBucket, Stacks) run unchanged on moto's in-process AWS
(``mock_aws``). The full deploy sends the real packaged templates, with one seam: moto has no SAM
transform, so ``tests/deploy/samlite.py`` turns the two ``AWS::Serverless::*`` resources into the
plain ones SAM would make before the template is sent (see its docstring). Everything else is real
moto behaviour: the table (moto ignores its point-in-time recovery setting), the IAM policy
resolved to the table's ARN, the SSM-typed JWKS parameter resolved into the function's
environment, the function's code fetched from the uploaded S3 key, the outputs of one stack fed
to the next.

The observability stack deploys last on the same moto, its alarms, subscription and saved
queries made through samlite's models (moto's CloudFormation has none of the three), so what
each alarm and dashboard line names is read back resolved and compared with what moto holds.

What moto cannot follow, and so is not proven here: API Gateway importing Chalice's Swagger 2.0
body (moto imports only OpenAPI 3) with its routes, gateway responses, stage throttling and the
stage's X-Ray tracing; whether an alarm ever changes state (moto evaluates none) or a metric
with those dimensions is ever published (CloudWatch's own, and the EMF lines read from logs);
the dashboard's rendering and the saved queries' syntax (Logs Insights is not in moto);
invoking a Lambda (moto needs Docker for that); SAM's own transform; CloudFormation's real
ordering, timing and rollbacks; LocalStack. Those are covered as far as possible by
test_templates.py and test_zips.py, and otherwise only by a real `make deploy-localstack` or
`make deploy` (docs/deploy.md says which).
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import socket
import zipfile
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice import UnauthorizedError
from moto import mock_aws

from svckit import events, keys
from svckit.tokens import TokenIssuer, TokenVerifier
from tests.deploy import samlite
from tests.deploy.samlite import SamLiteStacks
from tools import deploy, eventstack, observability, package, topology
from tools.services import GATEWAY, PRODUCT, SERVICES, USER, ServiceDef

pytestmark = pytest.mark.deploy

REGION = "us-east-1"
STAGE = "dev"


class Recorder:
    """Collects what the deploy says, to check order and that no key material is in it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.lines.append(message)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def naming() -> deploy.Naming:
    return deploy.Naming(STAGE)


# --- keys ----------------------------------------------------------------------------------


def test_key_names_come_from_the_stage_name_alone(naming: deploy.Naming) -> None:
    assert naming.signing_key_secret == f"shop/{STAGE}/jwt-signing-key"
    assert naming.jwks_parameter == f"/shop/{STAGE}/jwt-jwks"
    # Nothing in the stage's config names the key: the stack hands the function the ARN.
    assert USER.stage_env(STAGE)["JWT_SIGNING_KEY"] == package.PLACEHOLDER
    assert deploy.Naming("prod").signing_key_secret == "shop/prod/jwt-signing-key"


def test_keys_are_created_once_and_the_public_half_verifies_the_private_half(
    aws: Any, naming: deploy.Naming
) -> None:
    said = Recorder()
    store = deploy.KeyStore(aws.client("secretsmanager"), aws.client("ssm"), naming, said)
    first = store.ensure()
    assert first.created
    secrets, ssm = aws.client("secretsmanager"), aws.client("ssm")
    secret = secrets.get_secret_value(SecretId=naming.signing_key_secret)
    parameter = ssm.get_parameter(Name=naming.jwks_parameter)["Parameter"]
    assert parameter["Type"] == "String"
    token = TokenIssuer(secret["SecretString"], ttl_seconds=60).issue("alice")
    assert TokenVerifier(parameter["Value"]).verify(token).username == "alice"

    second = store.ensure()
    assert not second.created
    assert second.secret_arn == first.secret_arn
    again = secrets.get_secret_value(SecretId=naming.signing_key_secret)
    assert again["VersionId"] == secret["VersionId"]
    assert again["SecretString"] == secret["SecretString"]
    assert (
        ssm.get_parameter(Name=naming.jwks_parameter)["Parameter"]["Version"]
        == parameter["Version"]
    )

    public_x = json.loads(parameter["Value"])["keys"][0]["x"]
    assert "PRIVATE KEY" not in said.text
    assert public_x not in said.text
    assert secret["SecretString"].splitlines()[1] not in said.text


@pytest.mark.parametrize("damage", ["deleted", "stale"])
def test_a_missing_or_stale_public_key_is_rebuilt_from_the_secret(
    aws: Any, naming: deploy.Naming, damage: str
) -> None:
    store = deploy.KeyStore(aws.client("secretsmanager"), aws.client("ssm"), naming, Recorder())
    store.ensure()
    ssm = aws.client("ssm")
    good = ssm.get_parameter(Name=naming.jwks_parameter)["Parameter"]["Value"]
    if damage == "deleted":
        ssm.delete_parameter(Name=naming.jwks_parameter)
    else:
        other = keys.new_key_material()[1]
        ssm.put_parameter(Name=naming.jwks_parameter, Value=other, Type="String", Overwrite=True)
    refs = store.ensure()
    assert not refs.created
    assert json.loads(
        ssm.get_parameter(Name=naming.jwks_parameter)["Parameter"]["Value"]
    ) == json.loads(good)


def test_key_teardown_removes_both_and_a_new_deploy_gets_a_new_key(
    aws: Any, naming: deploy.Naming
) -> None:
    store = deploy.KeyStore(aws.client("secretsmanager"), aws.client("ssm"), naming, Recorder())
    store.ensure()
    old = aws.client("ssm").get_parameter(Name=naming.jwks_parameter)["Parameter"]["Value"]
    store.destroy()
    store.destroy()  # nothing left: still fine
    with pytest.raises(aws.client("ssm").exceptions.ParameterNotFound):
        aws.client("ssm").get_parameter(Name=naming.jwks_parameter)
    listed = aws.client("secretsmanager").list_secrets()["SecretList"]
    assert [s["Name"] for s in listed if s["Name"] == naming.signing_key_secret] == []
    assert store.ensure().created
    new = aws.client("ssm").get_parameter(Name=naming.jwks_parameter)["Parameter"]["Value"]
    assert deploy._kids(new) != deploy._kids(old)


# --- artifacts -----------------------------------------------------------------------------


def _zip(path: Path, files: dict[str, str], date: tuple[int, ...]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=date), text)  # type: ignore[arg-type]
    return path


def test_content_key_ignores_timestamps_but_not_content(tmp_path: Path) -> None:
    a = _zip(tmp_path / "a.zip", {"app.py": "x = 1"}, (2024, 1, 1, 0, 0, 0))
    b = _zip(tmp_path / "b.zip", {"app.py": "x = 1"}, (2025, 6, 1, 12, 0, 0))
    c = _zip(tmp_path / "c.zip", {"app.py": "x = 2"}, (2024, 1, 1, 0, 0, 0))
    assert a.read_bytes() != b.read_bytes()
    assert deploy.content_key(a) == deploy.content_key(b) != deploy.content_key(c)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_bucket_is_private_reused_uploads_once_and_is_emptied_on_destroy(
    tmp_path: Path, region: str
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=region)
        bucket = deploy.ArtifactBucket(
            s3, "shop-dev-artifacts-123456789012-" + region, region, "123456789012", Recorder()
        )
        bucket.ensure()
        bucket.ensure()
        block = s3.get_public_access_block(Bucket=bucket.name)["PublicAccessBlockConfiguration"]
        assert all(block.values())
        zip_a = _zip(tmp_path / "a.zip", {"app.py": "x = 1"}, (2024, 1, 1, 0, 0, 0))
        zip_b = _zip(tmp_path / "b.zip", {"app.py": "x = 1"}, (2025, 1, 1, 0, 0, 0))
        key = bucket.upload(zip_a, "user_api")
        assert bucket.upload(zip_b, "user_api") == key  # same code, no second object
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket.name)["Contents"]] == [key]
        bucket.destroy()
        assert bucket.name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        bucket.destroy()  # already gone: fine


ACCOUNT = "123456789012"  # moto's default account: the deploy's caller
SQUATTER = "111111111111"


def _other_account(account: str) -> Any:
    """A session in another AWS account (moto maps assumed-role credentials to that account)."""
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/squatter", RoleSessionName="squatter"
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )


def test_every_bucket_and_object_call_names_the_expected_owner(aws: Any, tmp_path: Path) -> None:
    """S3 refuses a call whose ExpectedBucketOwner is not the bucket's owner, so no call can reach
    a bucket another account made under our predictable name. (CreateBucket and ListBuckets take
    no owner: the first makes the bucket ours, the second lists only ours.)"""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    aws.events.register("before-parameter-build.s3", record)
    deployer = deploy.Deployer(
        aws, deploy.Target(REGION, poll_seconds=0), deploy.Naming(STAGE), say=Recorder()
    )
    bucket = deployer.bucket()
    bucket.ensure()
    bucket.ensure()
    key = bucket.upload(_zip(tmp_path / "a.zip", {"app.py": "x"}, (2024, 1, 1, 0, 0, 0)), "svc")
    assert bucket.upload(tmp_path / "a.zip", "svc") == key
    bucket.put_text("svc/templates/t.json", "{}")
    bucket.destroy()

    operations = {name for name, _ in calls}
    assert {"HeadBucket", "PutPublicAccessBlock", "HeadObject", "PutObject"} <= operations
    assert {"ListObjectVersions", "DeleteObjects", "DeleteBucket"} <= operations
    unchecked = [
        (name, params.get("ExpectedBucketOwner"))
        for name, params in calls
        if name not in ("CreateBucket", "ListBuckets")
        and params.get("ExpectedBucketOwner") != ACCOUNT
    ]
    assert unchecked == []


def test_a_bucket_another_account_made_under_our_name_is_refused_before_anything_is_made(
    aws: Any,
    packaged: dict[str, package.Packaged],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The name is predictable (stage, account, region); someone who creates it first with an
    open policy must not receive the zips. The deploy stops with a clear error and exit 1."""
    name = deploy.Naming(STAGE).bucket(ACCOUNT, REGION)
    squatter = _other_account(SQUATTER).client("s3")
    squatter.create_bucket(Bucket=name)
    open_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{name}/*",
            }
        ],
    }
    squatter.put_bucket_policy(Bucket=name, Policy=json.dumps(open_policy))
    monkeypatch.setattr(package, "package_all", lambda stage: list(packaged.values()))
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)

    assert deploy.main(["deploy", "--stage", STAGE]) == 1
    err = capsys.readouterr().err
    assert f"bucket {name} exists but is not owned by account {ACCOUNT}" in err
    assert squatter.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
    assert aws.client("secretsmanager").list_secrets()["SecretList"] == []
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []

    # destroy leaves a bucket that is not ours alone, and finishes the rest
    assert deploy.main(["destroy", "--stage", STAGE]) == 0
    assert "not owned by this account: left alone" in capsys.readouterr().out
    assert squatter.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize(
    ("failing_call", "code"), [("head_bucket", "403"), ("create_bucket", "BucketAlreadyExists")]
)
def test_a_bucket_aws_reports_as_foreign_or_taken_is_refused(failing_call: str, code: str) -> None:
    """What AWS answers when ExpectedBucketOwner does not match (403), or when another account
    created the name between our check and our create (BucketAlreadyExists)."""

    class S3:
        def head_bucket(self, **kwargs: Any) -> None:
            if failing_call == "head_bucket":
                raise ClientError({"Error": {"Code": code}}, "HeadBucket")
            raise ClientError({"Error": {"Code": "404"}}, "HeadBucket")

        def create_bucket(self, **kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": code}}, "CreateBucket")

    bucket = deploy.ArtifactBucket(S3(), "shop-dev-x", REGION, ACCOUNT, Recorder())
    with pytest.raises(deploy.DeployError, match=f"not owned by account {ACCOUNT}"):
        bucket.ensure()


def test_local_code_uris_are_uploaded_and_replaced(tmp_path: Path) -> None:
    (tmp_path / "deployment.zip").write_bytes(b"zip")
    template = {
        "Resources": {
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"CodeUri": "./deployment.zip"},
            },
            "Other": {"Type": "AWS::S3::Bucket", "Properties": {}},
        }
    }
    uploaded: list[Path] = []

    def upload(path: Path) -> str:
        uploaded.append(path)
        return "svc/key.zip"

    result = deploy.with_artifacts(template, tmp_path, upload, "bucket")
    assert result["Resources"]["Fn"]["Properties"]["CodeUri"] == {
        "Bucket": "bucket",
        "Key": "svc/key.zip",
    }
    assert uploaded == [tmp_path / "deployment.zip"]
    assert template["Resources"]["Fn"]["Properties"]["CodeUri"] == "./deployment.zip"  # not mutated


# --- stacks --------------------------------------------------------------------------------

SMALL_TEMPLATE = {
    "Parameters": {"Label": {"Type": "String"}},
    "Resources": {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
            },
        }
    },
    "Outputs": {
        "TableName": {"Value": {"Ref": "Table"}},
        "Label": {"Value": {"Ref": "Label"}},
    },
}


def test_stack_is_created_left_alone_when_unchanged_updated_and_deleted(aws: Any) -> None:
    stacks = deploy.Stacks(
        aws.client("cloudformation"), poll_seconds=0, max_wait_seconds=10, say=Recorder()
    )
    created = stacks.deploy("s1", SMALL_TEMPLATE, {"Label": "one"}, {"stage": "t"})
    assert created.action == "created"
    assert created.outputs["Label"] == "one"
    assert created.outputs["TableName"] in aws.client("dynamodb").list_tables()["TableNames"]
    assert (
        stacks.deploy("s1", SMALL_TEMPLATE, {"Label": "one"}, {"stage": "t"}).action == "unchanged"
    )
    updated = stacks.deploy("s1", SMALL_TEMPLATE, {"Label": "two"}, {"stage": "t"})
    assert updated.action == "updated"
    assert updated.outputs["Label"] == "two"
    assert stacks.delete("s1") is True
    assert stacks.status("s1") is None
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
    assert stacks.delete("s1") is False


def test_oversized_template_goes_through_the_bucket(aws: Any) -> None:
    s3 = aws.client("s3")
    bucket = deploy.ArtifactBucket(
        s3, "shop-dev-artifacts-123456789012-us-east-1", REGION, "123456789012", Recorder()
    )
    bucket.ensure()
    big = json.loads(json.dumps(SMALL_TEMPLATE))
    big["Description"] = "padding " * 100
    big["Metadata"] = {"Padding": ["x" * 1000] * 60}
    stored: list[str] = []

    def template_url(body: str) -> str:
        stored.append(body)
        bucket.put_text("t/big.json", body)
        return bucket.url("t/big.json", None)

    stacks = deploy.Stacks(aws.client("cloudformation"), 0, 10, Recorder())
    result = stacks.deploy("big", big, {"Label": "x"}, {}, template_url)
    assert result.action == "created"
    assert result.outputs["Label"] == "x"
    assert len(stored) == 1
    assert len(stored[0]) > deploy.TEMPLATE_BODY_LIMIT


def test_an_unwanted_final_state_is_an_error_naming_the_stack() -> None:
    """The check that turns a rollback into a readable failure (moto never rolls back)."""

    class Settled(deploy.Stacks):
        def status(self, name: str) -> str | None:
            return "ROLLBACK_COMPLETE"

        def failure_reasons(self, name: str, limit: int = 10) -> list[str]:
            return ["Table: Resource handler returned message: boom"]

    with pytest.raises(deploy.DeployError, match=r"s1 ended ROLLBACK_COMPLETE(.|\n)*boom"):
        Settled(None, 0, 1, Recorder())._settle("s1", "CREATE_COMPLETE")


# --- targets and names ---------------------------------------------------------------------


def test_localstack_urls_use_the_execute_api_host_form() -> None:
    outputs = {
        "RestAPIId": "abc123",
        "EndpointURL": "https://abc123.execute-api.us-east-1.amazonaws.com/api/",
    }
    local = deploy.Target(REGION, "http://localhost.localstack.cloud:4566")
    assert (
        local.public_url(outputs, "api")
        == "https://abc123.execute-api.localhost.localstack.cloud:4566/api/"
    )
    assert (
        local.service_url(outputs, "api")
        == "http://abc123.execute-api.localhost.localstack.cloud:4566/api/"
    )
    moved = deploy.Target(REGION, "http://localhost.localstack.cloud:4599")
    assert moved.public_url(outputs, "api").endswith(":4599/api/")
    assert moved.service_url(outputs, "api").endswith(":4566/api/")  # inside LocalStack's network
    aws_target = deploy.Target(REGION)
    assert aws_target.public_url(outputs, "api") == outputs["EndpointURL"]
    assert aws_target.service_url(outputs, "api") == outputs["EndpointURL"]


def test_localstack_mode_never_sends_real_credentials() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAREAL",
        "AWS_SECRET_ACCESS_KEY": "real",
        "AWS_SESSION_TOKEN": "t",
        "AWS_PROFILE": "prod",
    }
    assert deploy.localstack_environment(env) == deploy.LOCALSTACK_ENDPOINT
    assert env["AWS_ENDPOINT_URL"] == deploy.LOCALSTACK_ENDPOINT
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("test", "test")
    assert "AWS_SESSION_TOKEN" not in env
    assert "AWS_PROFILE" not in env
    custom = {"AWS_ENDPOINT_URL": "http://127.0.0.1:4599"}
    assert deploy.localstack_environment(custom) == "http://127.0.0.1:4599"


@pytest.mark.parametrize("stage", ["Dev", "dev_1", "", "a" * 17, "1dev"])
def test_stage_names_that_cannot_name_a_bucket_are_refused(stage: str) -> None:
    with pytest.raises(deploy.DeployError):
        deploy.Naming(stage)


def test_names_keep_stages_apart() -> None:
    dev, prod = deploy.Naming("dev"), deploy.Naming("prod")
    assert dev.stack(USER) == "shop-dev-user-api" != prod.stack(USER)
    assert dev.bucket("123456789012", "eu-west-1") == "shop-dev-artifacts-123456789012-eu-west-1"
    assert len(prod.bucket("123456789012", "ap-southeast-2")) <= 63


def test_reserved_concurrency_that_the_account_cannot_hold_is_refused_before_any_stack() -> None:
    assert deploy.concurrency_problem(30, 1000) is None
    assert deploy.concurrency_problem(0, 10) is None
    problem = deploy.concurrency_problem(30, 10)
    assert problem is not None
    assert "reserved_concurrency" in problem


# --- the whole deploy ----------------------------------------------------------------------


def _deployer(aws: Any, packaged: dict[str, package.Packaged], said: Recorder) -> deploy.Deployer:
    built = [packaged[s.name] for s in SERVICES]
    stacks = SamLiteStacks(aws.client("cloudformation"), 0, 30, said)
    return deploy.Deployer(
        aws,
        deploy.Target(REGION, poll_seconds=0, max_wait_seconds=30),
        deploy.Naming(STAGE),
        packager=lambda stage: built,
        stacks=stacks,
        say=said,
    )


def _physical_ids(aws: Any, stack: str) -> dict[str, str]:
    """The stack's resources: logical id -> physical id (a function's name, a queue's URL...)."""
    resources = aws.client("cloudformation").describe_stack_resources(StackName=stack)
    return {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources["StackResources"]
    }


def _function_env(aws: Any, stack: str, logical_id: str = package.FUNCTION) -> dict[str, str]:
    name = _physical_ids(aws, stack)[logical_id]
    return dict(
        aws.client("lambda").get_function_configuration(FunctionName=name)["Environment"][
            "Variables"
        ]
    )


def test_deploy_wires_the_stacks_in_order_and_destroy_removes_everything(
    aws: Any, packaged: dict[str, package.Packaged]
) -> None:
    said = Recorder()
    deployer = _deployer(aws, packaged, said)
    naming = deployer.naming
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        urls = deployer.deploy()

    # Order: the bus first, both services before the gateway, the observability stack (which
    # watches them all) last; the gateway's URL is printed last.
    created = [line.split()[1].rstrip(":") for line in said.lines if line.endswith(": created")]
    assert created == [
        naming.events_stack,
        naming.stack(USER),
        naming.stack(PRODUCT),
        naming.stack(GATEWAY),
        naming.observability_stack,
    ]
    assert said.lines[-1] == f"Gateway URL: {urls[GATEWAY.name]}"
    dashboard = deployer.stacks.outputs(naming.observability_stack)["DashboardUrl"]
    assert said.lines[-2] == f"Dashboard: {dashboard}"

    stacks = deployer.stacks
    user_out = stacks.outputs(naming.stack(USER))
    product_out = stacks.outputs(naming.stack(PRODUCT))
    gateway_out = stacks.outputs(naming.stack(GATEWAY))
    assert urls == {
        USER.name: user_out["EndpointURL"],
        PRODUCT.name: product_out["EndpointURL"],
        GATEWAY.name: gateway_out["EndpointURL"],
    }

    # The gateway got the other stacks' URLs, as parameters and in its function's environment.
    cfn = aws.client("cloudformation")
    gateway_params = {
        p["ParameterKey"]: p["ParameterValue"]
        for p in cfn.describe_stacks(StackName=naming.stack(GATEWAY))["Stacks"][0]["Parameters"]
    }
    assert gateway_params["UserApiUrl"] == user_out["EndpointURL"]
    assert gateway_params["ProductApiUrl"] == product_out["EndpointURL"]
    gateway_env = _function_env(aws, naming.stack(GATEWAY))
    assert gateway_env["USER_API_URL"] == user_out["EndpointURL"]
    assert gateway_env["PRODUCT_API_URL"] == product_out["EndpointURL"]

    # Each data service's function names the table its stack made, on-demand. (Its point-in-time
    # recovery is checked on the template only: moto's CloudFormation ignores that property.)
    dynamodb = aws.client("dynamodb")
    jwks = aws.client("ssm").get_parameter(Name=naming.jwks_parameter)["Parameter"]["Value"]
    secret_arn = aws.client("secretsmanager").describe_secret(SecretId=naming.signing_key_secret)[
        "ARN"
    ]
    for service, outputs in ((USER, user_out), (PRODUCT, product_out)):
        function_env = _function_env(aws, naming.stack(service))
        assert function_env["TABLE_NAME"] == outputs["TableName"]
        table = dynamodb.describe_table(TableName=outputs["TableName"])["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert function_env["JWT_JWKS"] == jwks
    # user_api's second table, the failed-login counters, is the stack's too. (Its TTL, like
    # PITR, is checked on the template only: moto's CloudFormation ignores that property.)
    counters = _function_env(aws, naming.stack(USER))["LOGIN_ATTEMPTS_TABLE"]
    assert counters == user_out["LoginAttemptsTableName"]
    assert counters != user_out["TableName"]
    counters_table = dynamodb.describe_table(TableName=counters)["Table"]
    assert counters_table["KeySchema"] == [{"AttributeName": "counter_key", "KeyType": "HASH"}]
    assert (
        _function_env(aws, naming.stack(USER))["JWT_SIGNING_KEY"] == f"secretsmanager:{secret_arn}"
    )
    assert "JWT_SIGNING_KEY" not in _function_env(aws, naming.stack(PRODUCT))
    assert gateway_env["JWT_JWKS"] == jwks

    # The data policy was attached with the real table ARN (and the secret, for user_api only).
    iam = aws.client("iam")
    for service, outputs in ((USER, user_out), (PRODUCT, product_out)):
        resources = cfn.describe_stack_resources(StackName=naming.stack(service))["StackResources"]
        role = next(
            r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "ApiHandlerRole"
        )
        documents = [
            json.dumps(iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"])
            for p in iam.list_role_policies(RoleName=role)["PolicyNames"]
        ]
        table_arn = dynamodb.describe_table(TableName=outputs["TableName"])["Table"]["TableArn"]
        assert any(table_arn in d for d in documents)
        if service is USER:
            counters_arn = dynamodb.describe_table(TableName=counters)["Table"]["TableArn"]
            assert any(counters_arn in d for d in documents)
        assert any(secret_arn in d for d in documents) == (service is USER)

    # Each function is named after its stack (an event function with its own suffix), and its
    # role may write only its own log group: not another function's of the same stack.
    for service in SERVICES:
        stack = naming.stack(service)
        by_id = _physical_ids(aws, stack)
        names = {}
        for logical_id, suffix in package.functions_of(service).items():
            assert by_id[logical_id] == stack + suffix
            names[logical_id] = stack + suffix
        assert len(names) == len(set(names.values())) == (3 if service.owns_table else 1)
        for logical_id, function_name in names.items():
            role = by_id[package.role_of(logical_id)]
            role_policies = json.dumps(
                [
                    iam.get_role_policy(RoleName=role, PolicyName=p)
                    for p in iam.list_role_policies(RoleName=role)["PolicyNames"]
                ],
                default=str,
            )
            own = f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/lambda/{function_name}:*"
            assert own in role_policies
            assert "/aws/lambda/*" not in role_policies
            for other in set(names.values()) - {function_name}:
                assert f"/aws/lambda/{other}:" not in role_policies
            assert aws.client("logs").describe_log_groups(
                logGroupNamePrefix=f"/aws/lambda/{function_name}"
            )["logGroups"][0]["retentionInDays"] == 14

    # The code each function runs is the zip the deploy uploaded. The observability template is
    # over CloudFormation's 51,200 bytes for a body, so it went through the bucket too.
    s3 = aws.client("s3")
    bucket = deployer.bucket().name
    objects = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    templates = [o for o in objects if not o.endswith(".zip")]
    assert sorted(set(objects) - set(templates)) == sorted(
        f"{s.name}/{deploy.content_key(packaged[s.name].zip_path)}.zip" for s in SERVICES
    )
    observability_body = json.dumps(observability.template(STAGE), separators=(",", ":"))
    assert len(observability_body.encode()) > deploy.TEMPLATE_BODY_LIMIT
    assert [t.split("/")[0] for t in templates] == [observability.STACK_PART]

    # No key material reached the output.
    pem = aws.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    printed = out.getvalue() + said.text
    assert pem.splitlines()[1] not in printed
    assert "PRIVATE KEY" not in printed

    # A second deploy reuses the key, the bucket and the uploads.
    deployer.deploy()
    assert "keys: reusing" in said.text
    assert "bucket: reusing" in said.text
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == objects
    assert aws.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"] == pem

    # Destroy: the gateway first, the bus last, then everything the deploy made is gone.
    said.lines.clear()
    deployer.destroy()
    deleted = [
        line.split()[1].rstrip(":")
        for line in said.lines
        if line.endswith(": deleted") and line.startswith("stack")
    ]
    assert deleted == [
        naming.observability_stack,
        naming.stack(GATEWAY),
        naming.stack(PRODUCT),
        naming.stack(USER),
        naming.events_stack,
    ]
    assert all(stacks.status(naming.stack(s)) is None for s in SERVICES)
    assert stacks.status(naming.events_stack) is None
    assert stacks.status(naming.observability_stack) is None
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert aws.client("cloudwatch").list_dashboards()["DashboardEntries"] == []
    assert aws.client("sns").list_topics()["Topics"] == []
    assert samlite.query_definitions(ACCOUNT, REGION) == {}
    events_client = aws.client("events")
    assert [b["Name"] for b in events_client.list_event_buses()["EventBuses"]] == ["default"]
    assert events_client.list_archives()["Archives"] == []
    assert aws.client("sqs").list_queues().get("QueueUrls", []) == []
    assert aws.client("lambda").list_event_source_mappings()["EventSourceMappings"] == []
    assert dynamodb.list_tables()["TableNames"] == []
    assert aws.client("lambda").list_functions()["Functions"] == []
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert (
        aws.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"] == []
    )
    assert aws.client("secretsmanager").list_secrets()["SecretList"] == []
    with pytest.raises(aws.client("ssm").exceptions.ParameterNotFound):
        aws.client("ssm").get_parameter(Name=naming.jwks_parameter)
    assert said.lines[-2] == f"Gateway URL (removed): {urls[GATEWAY.name]}"


def _restaged(
    packaged: dict[str, package.Packaged], stage: str, out: Path
) -> list[package.Packaged]:
    """What packaging ``stage`` gives when its config is a copy of dev's: the same code and
    settings, with the one value ``tools.package`` derives from the stage itself."""
    result = []
    for service in SERVICES:
        source = packaged[service.name]
        target = out / stage / service.name
        shutil.copytree(source.directory, target)
        template = source.template()
        for logical_id in package.functions_of(service):
            variables = template["Resources"][logical_id]["Properties"]["Environment"]
            variables["Variables"]["STAGE"] = stage
        (target / "sam.json").write_text(json.dumps(template))
        result.append(package.Packaged(service, target, 0.0))
    return result


def test_a_stage_copied_from_dev_gets_its_own_key_and_destroying_it_leaves_dev_alone(
    aws: Any,
    packaged: dict[str, package.Packaged],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/deploy.md says a new stage is a copy of dev's section. Every per-stage name (secret,
    parameter, stacks, functions, bucket) comes from the stage name, never from a copied
    setting, so the copy has its own key, its tokens fail in dev, and its destroy spares dev."""
    real_config = ServiceDef.config

    def with_qa(self: ServiceDef) -> dict[str, Any]:
        config = real_config(self)
        config["stages"]["qa"] = copy.deepcopy(config["stages"]["dev"])
        return config

    monkeypatch.setattr(ServiceDef, "config", with_qa)
    said = Recorder()
    deployers = {}
    for stage in ("dev", "qa"):
        built = _restaged(packaged, stage, tmp_path)
        deployers[stage] = deploy.Deployer(
            aws,
            deploy.Target(REGION, poll_seconds=0, max_wait_seconds=30),
            deploy.Naming(stage),
            packager=lambda _stage, built=built: built,
            stacks=SamLiteStacks(aws.client("cloudformation"), 0, 30, said),
            say=said,
        )
        deployers[stage].deploy()
    dev, qa = deployers["dev"].naming, deployers["qa"].naming
    assert qa.signing_key_secret == "shop/qa/jwt-signing-key" != dev.signing_key_secret
    assert qa.jwks_parameter == "/shop/qa/jwt-jwks" != dev.jwks_parameter
    assert {qa.stack(s) for s in SERVICES}.isdisjoint({dev.stack(s) for s in SERVICES})

    secrets, ssm = aws.client("secretsmanager"), aws.client("ssm")
    arn, pem, jwks = {}, {}, {}
    for stage, naming in (("dev", dev), ("qa", qa)):
        secret = secrets.get_secret_value(SecretId=naming.signing_key_secret)
        arn[stage], pem[stage] = secret["ARN"], secret["SecretString"]
        jwks[stage] = ssm.get_parameter(Name=naming.jwks_parameter)["Parameter"]["Value"]
        user_env = _function_env(aws, naming.stack(USER))
        assert user_env["JWT_SIGNING_KEY"] == f"secretsmanager:{arn[stage]}"
        for service in SERVICES:
            env = _function_env(aws, naming.stack(service))
            assert env["JWT_JWKS"] == jwks[stage]
            assert env["STAGE"] == stage
    assert pem["dev"] != pem["qa"]
    assert deploy._kids(jwks["dev"]).isdisjoint(deploy._kids(jwks["qa"]))

    # A token as qa's user_api signs it verifies in qa and is refused by dev's settings.
    monkeypatch.setenv("STAGE", "qa")
    token = TokenIssuer(pem["qa"], ttl_seconds=60).issue("alice")
    assert TokenVerifier(jwks["qa"]).verify(token).username == "alice"
    monkeypatch.setenv("STAGE", "dev")
    with pytest.raises(UnauthorizedError):
        TokenVerifier(jwks["dev"]).verify(token)

    # Destroying qa removes qa's key and nothing of dev's.
    deployers["qa"].destroy()
    assert secrets.get_secret_value(SecretId=dev.signing_key_secret)["SecretString"] == pem["dev"]
    assert ssm.get_parameter(Name=dev.jwks_parameter)["Parameter"]["Value"] == jwks["dev"]
    assert [s["Name"] for s in secrets.list_secrets()["SecretList"]] == [dev.signing_key_secret]
    assert all(deployers["dev"].stacks.status(dev.stack(s)) == "CREATE_COMPLETE" for s in SERVICES)
    # Each stage had its own bus and queues (named from its stacks, even with dev's template);
    # qa's went with it, dev's are still there.
    assert deployers["dev"].stacks.status(dev.events_stack) == "CREATE_COMPLETE"
    assert deployers["qa"].stacks.status(qa.events_stack) is None
    # And its own alarms, dashboard and topic; dev's are still there.
    assert deployers["dev"].stacks.status(dev.observability_stack) == "CREATE_COMPLETE"
    assert deployers["qa"].stacks.status(qa.observability_stack) is None
    cloudwatch = aws.client("cloudwatch")
    alarm_names = [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]]
    assert alarm_names
    assert all(name.startswith("shop-dev-") for name in alarm_names), alarm_names
    dashboards = cloudwatch.list_dashboards()["DashboardEntries"]
    assert [d["DashboardName"] for d in dashboards] == ["shop-dev"]
    topics = [t["TopicArn"].rsplit(":", 1)[1] for t in aws.client("sns").list_topics()["Topics"]]
    assert topics == ["shop-dev-alarms"]
    buses = [b["Name"] for b in aws.client("events").list_event_buses()["EventBuses"]]
    assert sorted(buses) == ["default", topology.bus_name("dev")]
    queues = [u.rsplit("/", 1)[1] for u in aws.client("sqs").list_queues()["QueueUrls"]]
    assert queues
    assert all(q.startswith("shop-dev-") for q in queues), queues
    assert deployers["dev"].bucket().state() == "ours"
    assert deployers["qa"].bucket().state() == "absent"


def test_cli_destroy_of_a_stage_never_deployed_succeeds_and_a_bad_stage_fails(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy.main(["destroy", "--stage", STAGE]) == 0
    assert "stage dev destroyed" in capsys.readouterr().out
    assert deploy.main(["deploy", "--stage", "nope"]) == 1
    assert "no stage 'nope'" in capsys.readouterr().err


def test_cli_localstack_mode_says_so_when_localstack_is_not_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    assert deploy.main(["deploy", "--stage", STAGE, "--localstack"]) == 1
    assert "Is LocalStack running" in capsys.readouterr().err
    assert os.environ["AWS_ACCESS_KEY_ID"] == "test"  # LocalStack's, not the caller's


def _queue_arn(sqs: Any, name: str) -> str:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ])


def _role_documents(aws: Any, stack: str, logical_id: str) -> str:
    """Every policy of the function's role, as moto resolved it (ARNs, not references)."""
    iam = aws.client("iam")
    role = _physical_ids(aws, stack)[package.role_of(logical_id)]
    return json.dumps(
        [
            iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        ]
    )


def test_the_bus_stack_feeds_the_services_streams_queues_and_rules(
    aws: Any, packaged: dict[str, package.Packaged]
) -> None:
    """The events as moto builds them from the real templates: the bus stack's outputs in the
    service stacks' parameters and functions, each relay's mapping on its own table's stream
    with the topology's retry settings and failure queue, each consumer's mapping on its own
    queue, each rule delivering only its subscription's events to its queue, and the queue's
    redrive to its dead-letter queue."""
    said = Recorder()
    deployer = _deployer(aws, packaged, said)
    naming = deployer.naming
    with redirect_stdout(io.StringIO()):
        deployer.deploy()
    cfn, sqs, lam = aws.client("cloudformation"), aws.client("sqs"), aws.client("lambda")
    events_client, dynamodb = aws.client("events"), aws.client("dynamodb")

    bus_out = deployer.stacks.outputs(naming.events_stack)
    bus_name = topology.bus_name(STAGE)
    assert bus_out[eventstack.BUS_NAME_PARAMETER] == bus_name
    bus_arn = events_client.describe_event_bus(Name=bus_name)["Arn"]
    assert bus_out[eventstack.BUS_ARN_PARAMETER] == bus_arn
    archive = events_client.list_archives(EventSourceArn=bus_arn)["Archives"]
    assert [(a["RetentionDays"], a["State"]) for a in archive] == [
        (topology.ARCHIVE_RETENTION_DAYS, "ENABLED")
    ]

    for service in (USER, PRODUCT):
        stack = naming.stack(service)
        parameters = {
            p["ParameterKey"]: p["ParameterValue"]
            for p in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Parameters"]
        }
        assert parameters[eventstack.BUS_NAME_PARAMETER] == bus_name
        assert parameters[eventstack.BUS_ARN_PARAMETER] == bus_arn
        ids = _physical_ids(aws, stack)
        for logical_id in package.functions_of(service):
            function_env = _function_env(aws, stack, logical_id)
            assert function_env["EVENT_BUS_NAME"] == bus_name
            assert function_env["PROCESSED_EVENTS_TABLE"] == ids[topology.PROCESSED_EVENTS_TABLE]
            assert function_env["TABLE_NAME"] == ids["Table"]
            assert package.PLACEHOLDER not in function_env.values()

        for relay in topology.relays_of(service):
            function_name = ids[eventstack.function_id(relay.handler)]
            (mapping,) = lam.list_event_source_mappings(FunctionName=function_name)[
                "EventSourceMappings"
            ]
            table = dynamodb.describe_table(TableName=ids[relay.table])["Table"]
            assert mapping["EventSourceArn"] == table["LatestStreamArn"]
            assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
            assert mapping["StartingPosition"] == "TRIM_HORIZON"
            assert mapping["BatchSize"] == relay.batch_size
            assert mapping["MaximumRetryAttempts"] == relay.maximum_retry_attempts
            assert mapping["BisectBatchOnFunctionError"] is True
            assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            failures = _queue_arn(sqs, relay.failure_queue_name(STAGE))
            assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": failures}}
            # Its role, resolved: its own stream, the stage's bus under its own source, its
            # failure queue; no table, no other stream, no queue to read.
            documents = _role_documents(aws, stack, eventstack.function_id(relay.handler))
            assert table["LatestStreamArn"] in documents
            assert bus_arn in documents
            assert json.dumps({"events:source": relay.source}) in documents
            assert failures in documents
            assert table["TableArn"] + '"' not in documents
            assert "sqs:ReceiveMessage" not in documents

        for sub in topology.subscriptions_of(service):
            function_name = ids[eventstack.function_id(sub.handler)]
            (mapping,) = lam.list_event_source_mappings(FunctionName=function_name)[
                "EventSourceMappings"
            ]
            queue_arn = _queue_arn(sqs, sub.queue_name(STAGE))
            dead_letters = _queue_arn(sqs, sub.dead_letter_queue_name(STAGE))
            assert mapping["EventSourceArn"] == queue_arn
            assert mapping["BatchSize"] == sub.batch_size
            assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            url = sqs.get_queue_url(QueueName=sub.queue_name(STAGE))["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
                "Attributes"
            ]
            assert int(attributes["VisibilityTimeout"]) == sub.visibility_timeout_seconds
            assert json.loads(attributes["RedrivePolicy"]) == {
                "deadLetterTargetArn": dead_letters,
                "maxReceiveCount": sub.max_receive_count,
            }
            rule = events_client.describe_rule(Name=sub.rule_name(STAGE), EventBusName=bus_name)
            assert json.loads(rule["EventPattern"]) == sub.event_pattern()
            targets = events_client.list_targets_by_rule(
                Rule=sub.rule_name(STAGE), EventBusName=bus_name
            )["Targets"]
            assert [t["Arn"] for t in targets] == [queue_arn]
            # What EventBridge cannot deliver goes to the consumer's own dead-letter queue.
            assert [t["DeadLetterConfig"] for t in targets] == [{"Arn": dead_letters}]
            assert [t["RetryPolicy"] for t in targets] == [
                {
                    "MaximumRetryAttempts": eventstack.RULE_RETRY_ATTEMPTS,
                    "MaximumEventAgeInSeconds": eventstack.RULE_EVENT_AGE_SECONDS,
                }
            ]
            documents = _role_documents(aws, stack, eventstack.function_id(sub.handler))
            assert queue_arn in documents
            assert dead_letters not in documents
            assert "events:PutEvents" not in documents
            # moto would invoke the function for each message (in Docker, which is not here):
            # the mapping is paused so that what the rule delivers stays in the queue.
            lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)

    # One event of each subscribed type onto the bus, and one nobody subscribes to: each lands
    # in its subscriber's queue only.
    entries = [
        (events.PRODUCT_SOURCE, events.PRODUCT_ADDED),
        (events.USER_SOURCE, events.USER_DELETED),
        (events.USER_SOURCE, events.USER_REGISTERED),
    ]
    answer = events_client.put_events(
        Entries=[
            {"Source": source, "DetailType": kind, "Detail": "{}", "EventBusName": bus_name}
            for source, kind in entries
        ]
    )
    assert answer["FailedEntryCount"] == 0
    for sub in topology.SUBSCRIPTIONS:
        url = sqs.get_queue_url(QueueName=sub.queue_name(STAGE))["QueueUrl"]
        dead_url = sqs.get_queue_url(QueueName=sub.dead_letter_queue_name(STAGE))["QueueUrl"]
        received = []
        # Never applied: each receive spends one of the queue's tries, then the message moves
        # to the dead-letter queue, where the operator finds it.
        for _ in range(sub.max_receive_count + 1):
            messages = sqs.receive_message(
                QueueUrl=url, VisibilityTimeout=0, MaxNumberOfMessages=10
            ).get("Messages", [])
            received += [json.loads(m["Body"])["detail-type"] for m in messages]
        assert received == [sub.types[0]] * sub.max_receive_count, sub.queue
        dead = sqs.receive_message(QueueUrl=dead_url, MaxNumberOfMessages=10)["Messages"]
        assert [json.loads(m["Body"])["detail-type"] for m in dead] == list(sub.types)


def _stack_parameters(aws: Any, stack: str) -> dict[str, str]:
    described = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}


def test_the_observability_stack_watches_what_the_other_stacks_made(
    aws: Any, packaged: dict[str, package.Packaged]
) -> None:
    """Deployed last on moto, from the service stacks' outputs: every alarm's dimensions, as
    moto resolved them, name a function, table, queue or API that moto holds (or an EMF series
    of the exact dimension set the services emit); the dashboard names the same; the saved
    queries name every function's log group; the alarm e-mail is subscribed only when given,
    kept when a later deploy does not say, and removed by an empty one."""
    said = Recorder()
    deployer = _deployer(aws, packaged, said)
    deployer.alarm_email = "ops@example.com"
    naming = deployer.naming
    with redirect_stdout(io.StringIO()):
        deployer.deploy()
    stacks = deployer.stacks

    # Its table parameters are the service stacks' outputs, each a table moto made.
    parameters = _stack_parameters(aws, naming.observability_stack)
    tables = set(aws.client("dynamodb").list_tables()["TableNames"])
    for table in observability.tables():
        outputs = stacks.outputs(naming.stack(table.service))
        assert parameters[table.parameter] == outputs[table.output]
        assert outputs[table.output] in tables
        assert outputs[table.output] == _physical_ids(aws, naming.stack(table.service))[
            table.logical_id
        ]
    assert parameters[observability.ALARM_EMAIL_PARAMETER] == "ops@example.com"

    functions = {f["FunctionName"] for f in aws.client("lambda").list_functions()["Functions"]}
    queues = {u.rsplit("/", 1)[1] for u in aws.client("sqs").list_queues()["QueueUrls"]}
    apis = {a["name"] for a in aws.client("apigateway").get_rest_apis()["items"]}
    assert apis == {naming.stack(s) for s in SERVICES}
    bus = topology.bus_name(STAGE)
    rules = {r["Name"] for r in aws.client("events").list_rules(EventBusName=bus)["Rules"]}
    assert rules >= {sub.rule_name(STAGE) for sub in topology.SUBSCRIPTIONS}  # and the archive's
    emf = {(n, tuple(sorted(d.items()))) for n, d in observability.app_series(STAGE)}

    def real(namespace: str, name: str, dims: dict[str, str]) -> bool:
        if namespace == "AWS/Lambda":
            return set(dims) == {"FunctionName"} and dims["FunctionName"] in functions
        if namespace == "AWS/DynamoDB":
            return set(dims) == {"TableName", "Operation"} and dims["TableName"] in tables
        if namespace == "AWS/SQS":
            return set(dims) == {"QueueName"} and dims["QueueName"] in queues
        if namespace == "AWS/ApiGateway":
            return dims.keys() == {"ApiName", "Stage"} and dims["ApiName"] in apis
        if namespace == "AWS/Events":
            return dims == {"EventBusName": bus, "RuleName": dims.get("RuleName")} and (
                dims["RuleName"] in rules
            )
        metric = observability.APP_METRICS[name]
        return tuple(dims) == metric.dimensions and (name, tuple(sorted(dims.items()))) in emf

    alarms = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert len(alarms) == len(observability.alarms(STAGE))
    topic = stacks.outputs(naming.observability_stack)["AlarmTopicArn"]
    for alarm in alarms:
        assert alarm["AlarmActions"] == [topic] == alarm["OKActions"]
        assert alarm["TreatMissingData"] == "notBreaching"
        metrics = [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
        if not metrics:
            metrics = [alarm]
        for metric in metrics:
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert real(metric["Namespace"], metric["MetricName"], dims), (alarm["AlarmName"], dims)
    watched_functions = {
        d["Value"] for a in alarms for d in a.get("Dimensions", []) if d["Name"] == "FunctionName"
    }
    assert watched_functions == functions

    # The dashboard, with the names moto resolved into its body.
    dashboard = aws.client("cloudwatch").get_dashboard(DashboardName=f"shop-{STAGE}")
    widgets = json.loads(dashboard["DashboardBody"])["widgets"]
    for widget in widgets:
        if widget["type"] != "metric":
            continue
        assert widget["properties"]["region"] == REGION
        for line in widget["properties"]["metrics"]:
            if isinstance(line, dict):
                continue  # SEARCH expressions: checked on the template
            parts = line[:-1] if isinstance(line[-1], dict) else line
            namespace, name, *pairs = parts
            assert real(namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))), line
    dashboard_text = dashboard["DashboardBody"]
    assert all(table in dashboard_text for table in tables)

    # The saved queries: every function's log group, each of which existed when they were made.
    groups = {
        g["logGroupName"]
        for g in aws.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")[
            "logGroups"
        ]
    }
    assert groups == {f"/aws/lambda/{name}" for name in functions}
    saved = samlite.query_definitions(ACCOUNT, REGION)
    assert sorted(saved) == sorted(
        observability.query_name(STAGE, q) for q in observability.QUERIES
    )
    for definition in saved.values():
        assert set(definition["LogGroupNames"]) == groups

    # The e-mail: subscribed; kept by a deploy that does not name one; removed by "".
    sns = aws.client("sns")

    def subscribed() -> list[str]:
        return [s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)[
            "Subscriptions"
        ]]

    assert subscribed() == ["ops@example.com"]
    assert "ops@example.com subscribed" in said.text
    deployer.alarm_email = None
    with redirect_stdout(io.StringIO()):
        deployer.deploy()
    assert subscribed() == ["ops@example.com"]
    assert _stack_parameters(aws, naming.observability_stack)[
        observability.ALARM_EMAIL_PARAMETER
    ] == "ops@example.com"
    deployer.alarm_email = ""
    with redirect_stdout(io.StringIO()):
        deployer.deploy()
    assert subscribed() == []


def test_an_observability_stack_first_deployed_without_an_address_has_no_subscription(
    aws: Any, packaged: dict[str, package.Packaged]
) -> None:
    deployer = _deployer(aws, packaged, Recorder())
    with redirect_stdout(io.StringIO()):
        deployer.deploy()
    topic = deployer.stacks.outputs(deployer.naming.observability_stack)["AlarmTopicArn"]
    assert aws.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []
    parameters = _stack_parameters(aws, deployer.naming.observability_stack)
    assert parameters.get(observability.ALARM_EMAIL_PARAMETER, "") == ""


def test_the_alarm_address_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str | None] = []

    def fake(stage: str, localstack: bool, alarm_email: str | None = None) -> Any:
        seen.append(alarm_email)
        raise deploy.DeployError("stop here")

    monkeypatch.setattr(deploy, "build_deployer", fake)
    monkeypatch.delenv("ALARM_EMAIL", raising=False)
    deploy.main(["deploy"])
    monkeypatch.setenv("ALARM_EMAIL", "env@example.com")
    deploy.main(["deploy"])
    deploy.main(["deploy", "--alarm-email", "flag@example.com"])
    deploy.main(["deploy", "--alarm-email", ""])
    assert seen == [None, "env@example.com", "flag@example.com", ""]
