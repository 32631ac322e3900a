"""Deploy the three services as CloudFormation stacks, to AWS or to LocalStack, and remove them.

``python -m tools.deploy deploy --stage dev [--localstack]`` does, in this order:

1. ``tools.package``: one SAM template and ``deployment.zip`` per service; the reserved
   concurrency they ask for is checked against the account's limit before anything is created;
2. an S3 bucket for the artifacts (created once, public access blocked, then reused only if
   this account owns it; every S3 call names the expected owner); each zip is uploaded under a
   key derived from its contents, so an unchanged service is not redeployed;
3. the token keys: an Ed25519 signing key in Secrets Manager (only user_api's role may read it)
   and its public JWKS in an SSM String parameter, created once and then reused, never printed;
4. the stage's event bus stack (``shop-<stage>-events``, from ``tools.eventstack``: the
   EventBridge bus and its archive), whose ``EventBusName``/``EventBusArn`` outputs become
   parameters of the user_api and product_api stacks (their relays publish to the bus, their
   rules subscribe their queues to it);
5. the user_api and product_api stacks (created, or updated when something changed), then
   their ``EndpointURL`` outputs become the gateway stack's ``UserApiUrl``/``ProductApiUrl``
   parameters, then the gateway_api stack;
6. the stage's observability stack (``shop-<stage>-observability``, from
   ``tools.observability``: the alarms' SNS topic, the alarms, the dashboard, the saved Logs
   Insights queries), last because it watches all the others: the tables' names are the
   service stacks' outputs, passed as its parameters; ``--alarm-email`` (or ``ALARM_EMAIL``)
   subscribes an address to the topic. The dashboard's URL and the gateway's URL are printed
   last.

``destroy`` deletes the observability stack first (its alarms watch the rest), then the gateway
stack, then the other two, then the bus stack (the services' rules live on the bus, so it goes
after them), the bucket, the secret and the parameter.
All state lives in the stacks: nothing is written to ``.chalice/deployed``, so any machine with
credentials can update or destroy what another one deployed.

``--localstack`` points every client at LocalStack through ``AWS_ENDPOINT_URL`` (default
``http://localhost.localstack.cloud:4566``, which boto3 honours for every service) with LocalStack's
test credentials, so real credentials are never sent to a local endpoint.

The AWS calls sit in three small classes (:class:`KeyStore`, :class:`ArtifactBucket`,
:class:`Stacks`) that take boto3 clients, so the tests run them against moto unchanged.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from svckit import keys
from tools import eventstack, observability, package
from tools.services import GATEWAY, PRODUCT, SERVICES, USER, ServiceDef

PROJECT = "shop"
LOCALSTACK_ENDPOINT = "http://localhost.localstack.cloud:4566"
# The port LocalStack listens on inside its container, which is where the gateway's Lambda
# container reaches the other APIs whatever host port the compose file publishes.
LOCALSTACK_INTERNAL_PORT = 4566
TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation accepts inline; larger ones go through S3
# Lambda refuses reserved concurrency that leaves the account fewer than this many unreserved.
UNRESERVED_MINIMUM = 10
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]  # Chalice's role; the SAM transform
_STAGE_SHAPE = re.compile(r"[a-z][a-z0-9-]{0,15}")
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(message, flush=True)


class DeployError(RuntimeError):
    """The deploy cannot go on; the message says what to do."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# ---------------------------------------------------------------------------------------------
# Names and targets


@dataclass(frozen=True)
class Naming:
    """Every name the deploy gives, derived from the stage name alone, so two stages never
    collide. Never from a stage's settings: a new stage starts as a copy of another's section
    in ``config.json``, and a name read from there would be the other stage's name (the signing
    key's once was, so a copied stage shared dev's key and its destroy deleted it)."""

    stage: str

    def __post_init__(self) -> None:
        if not _STAGE_SHAPE.fullmatch(self.stage):
            raise DeployError(
                f"stage {self.stage!r} must be 1-16 lower-case letters, digits or '-', "
                "starting with a letter (it becomes part of stack and bucket names)"
            )

    def stack(self, service: ServiceDef) -> str:
        return eventstack.service_stack_name(service, self.stage)

    @property
    def events_stack(self) -> str:
        """The bus's stack: first up, last down."""
        return eventstack.stack_name(self.stage, eventstack.EVENTS_STACK_PART)

    @property
    def observability_stack(self) -> str:
        """The alarms, dashboard and saved queries: last up, first down."""
        return observability.stack_name(self.stage)

    @property
    def signing_key_secret(self) -> str:
        """The key's secret; the function gets its ARN from the stack (``SigningKeySecretArn``)."""
        return f"{PROJECT}/{self.stage}/jwt-signing-key"

    @property
    def jwks_parameter(self) -> str:
        return f"/{PROJECT}/{self.stage}/jwt-jwks"

    def bucket(self, account: str, region: str) -> str:
        # Bucket names are global: the account and region make ours unique and predictable.
        return f"{PROJECT}-{self.stage}-artifacts-{account}-{region}"

    @property
    def tags(self) -> dict[str, str]:
        return {"project": PROJECT, "stage": self.stage}


@dataclass(frozen=True)
class Target:
    """Where the stacks go: AWS (``endpoint_url`` None) or LocalStack's edge endpoint."""

    region: str
    endpoint_url: str | None = None
    poll_seconds: float = 5.0
    max_wait_seconds: float = 1800.0

    @property
    def is_localstack(self) -> bool:
        return self.endpoint_url is not None

    def _localstack_url(self, api_id: str, stage_path: str, scheme: str, port: int) -> str:
        return f"{scheme}://{api_id}.execute-api.localhost.localstack.cloud:{port}/{stage_path}/"

    def public_url(self, outputs: Mapping[str, str], stage_path: str) -> str:
        """The URL to print: the stack's own on AWS, LocalStack's execute-api form there."""
        if not self.is_localstack:
            return outputs["EndpointURL"]
        port = urlparse(self.endpoint_url).port or LOCALSTACK_INTERNAL_PORT
        return self._localstack_url(outputs["RestAPIId"], stage_path, "https", port)

    def service_url(self, outputs: Mapping[str, str], stage_path: str) -> str:
        """The URL the gateway's function calls. On LocalStack that call starts inside a Lambda
        container, where LocalStack's DNS resolves ``*.localhost.localstack.cloud`` to LocalStack
        itself; plain HTTP on its internal port avoids depending on its certificate there."""
        if not self.is_localstack:
            return outputs["EndpointURL"]
        return self._localstack_url(
            outputs["RestAPIId"], stage_path, "http", LOCALSTACK_INTERNAL_PORT
        )


def localstack_environment(environ: dict[str, str] | None = None) -> str:
    """Point boto3 at LocalStack for this process; return the endpoint.

    Real credentials are replaced by LocalStack's test ones so they never leave for a local
    endpoint, and a profile that might carry an endpoint or a role is dropped.
    """
    env = os.environ if environ is None else environ
    endpoint = env.get("AWS_ENDPOINT_URL") or LOCALSTACK_ENDPOINT
    env["AWS_ENDPOINT_URL"] = endpoint
    env["AWS_ACCESS_KEY_ID"] = "test"
    env["AWS_SECRET_ACCESS_KEY"] = "test"  # noqa: S105 - LocalStack's documented dummy secret
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return endpoint


# ---------------------------------------------------------------------------------------------
# The signing key and the public JWKS


@dataclass(frozen=True)
class KeyRefs:
    secret_arn: str
    jwks_parameter: str
    created: bool


def _compact(jwks_json: str) -> str:
    """The JWKS on one line: it travels in a Lambda environment (4 KB for all variables)."""
    return json.dumps(json.loads(jwks_json), separators=(",", ":"))


def _jwks_for(private_pem: str) -> str:
    public = keys.load_private_key(private_pem).public_key()
    return _compact(json.dumps({"keys": [keys.public_jwk(public)]}))


def _kids(jwks_json: str) -> set[str]:
    try:
        return {str(k.get("kid")) for k in json.loads(jwks_json).get("keys", [])}
    except (ValueError, AttributeError):
        return set()


class KeyStore:
    """The token keys of one stage: the private key in Secrets Manager, the JWKS in SSM.

    The secret is authoritative. Created once; on later deploys the parameter is checked to list
    the secret's key id (a JWKS may list more during a rotation) and rewritten from the secret if
    it does not, so a half-finished earlier run or a hand edit cannot leave tokens unverifiable.
    Key material is never printed or logged; only names and ARNs are.
    """

    def __init__(self, secrets: Any, ssm: Any, naming: Naming, say: Say = _say) -> None:
        self._secrets = secrets
        self._ssm = ssm
        self._naming = naming
        self._say = say

    def _describe_secret(self) -> dict[str, Any] | None:
        try:
            return dict(self._secrets.describe_secret(SecretId=self._naming.signing_key_secret))
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _parameter(self) -> str | None:
        try:
            return str(
                self._ssm.get_parameter(Name=self._naming.jwks_parameter)["Parameter"]["Value"]
            )
        except ClientError as exc:
            if _error_code(exc) == "ParameterNotFound":
                return None
            raise

    def _put_parameter(self, jwks_json: str) -> None:
        self._ssm.put_parameter(
            Name=self._naming.jwks_parameter,
            Value=jwks_json,
            Type="String",
            Overwrite=True,
            Description="Public JWKS that verifies the shop's access tokens (not secret)",
        )

    def ensure(self) -> KeyRefs:
        name = self._naming.signing_key_secret
        secret = self._describe_secret()
        if secret is not None and secret.get("DeletedDate"):
            # Scheduled for deletion by hand: the name stays taken until then, so bring it back.
            self._secrets.restore_secret(SecretId=name)
            self._say(f"keys: restored secret {name}, which was scheduled for deletion")
        if secret is None:
            pem, jwks_json = keys.new_key_material()
            arn = self._secrets.create_secret(
                Name=name,
                SecretString=pem,
                Description="Ed25519 key that signs the shop's access tokens (user_api only)",
                Tags=[{"Key": k, "Value": v} for k, v in self._naming.tags.items()],
            )["ARN"]
            self._put_parameter(_compact(jwks_json))
            self._say(f"keys: created secret {name} and parameter {self._naming.jwks_parameter}")
            return KeyRefs(str(arn), self._naming.jwks_parameter, created=True)
        arn = str(secret["ARN"])
        pem = str(self._secrets.get_secret_value(SecretId=arn)["SecretString"])
        expected = _jwks_for(pem)
        current = self._parameter()
        if current is None or not _kids(expected) <= _kids(current):
            self._put_parameter(expected)
            self._say(f"keys: rewrote parameter {self._naming.jwks_parameter} from the secret")
        else:
            self._say(f"keys: reusing secret {name} and parameter {self._naming.jwks_parameter}")
        return KeyRefs(arn, self._naming.jwks_parameter, created=False)

    def destroy(self) -> None:
        # Without recovery: a secret in its recovery window keeps its name taken, and the next
        # deploy of the stage would fail to create it.
        try:
            self._secrets.delete_secret(
                SecretId=self._naming.signing_key_secret, ForceDeleteWithoutRecovery=True
            )
            self._say(f"keys: deleted secret {self._naming.signing_key_secret}")
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
        try:
            self._ssm.delete_parameter(Name=self._naming.jwks_parameter)
            self._say(f"keys: deleted parameter {self._naming.jwks_parameter}")
        except ClientError as exc:
            if _error_code(exc) != "ParameterNotFound":
                raise


# ---------------------------------------------------------------------------------------------
# Artifacts


def content_key(path: Path) -> str:
    """A hash of what a zip holds (names, CRCs, sizes), not of its bytes.

    Rebuilding the same code gives new timestamps and so new bytes; keyed by content, the S3 key
    and thus the template stay the same, and CloudFormation sees nothing to update.
    """
    digest = hashlib.sha256()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


class ArtifactBucket:
    """The stage's private S3 bucket for deployment zips (and templates too big to send inline).

    Its name is predictable (stage, account, region), and bucket names are global: anyone can
    create it first, with a policy that lets them read or replace what we upload. So the bucket is
    used only once it is proven ours. Every bucket and object call carries ``ExpectedBucketOwner``
    (the deploying account), which S3 itself enforces with a 403; and since not every endpoint
    enforces it (moto ignores it), a bucket that answers is also looked up in our own
    ``ListBuckets``. A bucket that is not ours stops the deploy before anything is uploaded.
    """

    def __init__(self, s3: Any, name: str, region: str, owner: str, say: Say = _say) -> None:
        self._s3 = s3
        self.name = name
        self._region = region
        self.owner = owner
        self._say = say

    @property
    def _owned(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self.owner}

    def _not_ours(self) -> DeployError:
        return DeployError(
            f"bucket {self.name} exists but is not owned by account {self.owner}; refusing to "
            "upload into it. Its name is predictable, so another account may have created it "
            "first: if that account is yours, delete the bucket there; otherwise deploy under "
            "another stage name"
        )

    def _listed_as_ours(self) -> bool:
        buckets = self._s3.list_buckets(Prefix=self.name).get("Buckets", [])
        return any(b.get("Name") == self.name for b in buckets)

    def state(self) -> str:
        """``absent``, ``ours`` or ``foreign``."""
        try:
            self._s3.head_bucket(Bucket=self.name, **self._owned)
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return "absent"
            if code in ("403", "AccessDenied"):
                return "foreign"  # S3's answer to an ExpectedBucketOwner that does not match
            raise
        return "ours" if self._listed_as_ours() else "foreign"

    def _block_public_access(self) -> None:
        self._s3.put_public_access_block(
            Bucket=self.name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
            **self._owned,
        )

    def ensure(self) -> None:
        """Create the bucket, or reuse it only if this account owns it; keep it private."""
        state = self.state()
        if state == "foreign":
            raise self._not_ours()
        if state == "ours":
            self._block_public_access()  # idempotent; repairs a block removed by hand
            self._say(f"bucket: reusing s3://{self.name}")
            return
        kwargs: dict[str, Any] = {"Bucket": self.name}
        if self._region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self._s3.create_bucket(**kwargs)
        except ClientError as exc:
            # Another account took the name between our check and our create.
            if _error_code(exc) == "BucketAlreadyExists":
                raise self._not_ours() from exc
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
        self._block_public_access()
        self._say(f"bucket: created s3://{self.name}")

    def upload(self, path: Path, prefix: str) -> str:
        """Upload ``path`` under a content-derived key (skipped when already there); the key."""
        key = f"{prefix}/{content_key(path)}{path.suffix}"
        try:
            self._s3.head_object(Bucket=self.name, Key=key, **self._owned)
            return key
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
        self._s3.upload_file(str(path), self.name, key, ExtraArgs=self._owned)
        return key

    def put_text(self, key: str, text: str) -> None:
        self._s3.put_object(Bucket=self.name, Key=key, Body=text.encode(), **self._owned)

    def url(self, key: str, endpoint_url: str | None) -> str:
        if endpoint_url:
            return f"{endpoint_url.rstrip('/')}/{self.name}/{key}"
        return f"https://{self.name}.s3.{self._region}.amazonaws.com/{key}"

    def destroy(self) -> None:
        state = self.state()
        if state == "absent":
            return
        if state == "foreign":
            # Nothing of ours can be in it (the deploy never uploads there): leave it, finish
            # the rest of the teardown.
            self._say(f"bucket: s3://{self.name} is not owned by this account: left alone")
            return
        paginator = self._s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.name, **self._owned):
            objects = [
                {"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if objects:
                self._s3.delete_objects(
                    Bucket=self.name, Delete={"Objects": objects, "Quiet": True}, **self._owned
                )
        self._s3.delete_bucket(Bucket=self.name, **self._owned)
        self._say(f"bucket: deleted s3://{self.name}")


def with_artifacts(
    template: Mapping[str, Any], directory: Path, upload: Callable[[Path], str], bucket: str
) -> dict[str, Any]:
    """``aws cloudformation package`` for a Chalice template: every local ``CodeUri`` or
    ``ContentUri`` (``./deployment.zip``, a layer's zip) is uploaded and replaced by its S3
    place."""
    result = copy.deepcopy(dict(template))
    for resource in result.get("Resources", {}).values():
        props = resource.get("Properties", {})
        for name in ("CodeUri", "ContentUri"):
            value = props.get(name)
            if isinstance(value, str) and not value.startswith("s3://"):
                props[name] = {"Bucket": bucket, "Key": upload(directory / value)}
    return result


# ---------------------------------------------------------------------------------------------
# Stacks


@dataclass
class StackResult:
    name: str
    action: str  # created, updated or unchanged
    outputs: dict[str, str] = field(default_factory=dict)


class Stacks:
    """CloudFormation with ``aws cloudformation deploy`` semantics, in a few calls.

    Create the stack, or update it when the template or a parameter changed ("No updates are to
    be performed" is success, not an error); a stack whose first create failed is deleted and
    created again. ``CreateStack``/``UpdateStack`` rather than change sets: the result on AWS is
    the same, and moto (which the tests run this class against) does not refresh a stack's outputs
    or parameters after executing a change set. Polling is bounded and the same against AWS,
    LocalStack and moto; a failure names each failed resource and its reason, not just
    ``ROLLBACK_COMPLETE``.
    """

    def __init__(
        self,
        cloudformation: Any,
        poll_seconds: float = 5.0,
        max_wait_seconds: float = 1800.0,
        say: Say = _say,
    ) -> None:
        self._cfn = cloudformation
        self._poll = poll_seconds
        self._max_wait = max_wait_seconds
        self._say = say

    def render(self, template: Mapping[str, Any]) -> dict[str, Any]:
        """The template as sent. Identity here; the moto tests override it (see tests/deploy)."""
        return dict(template)

    def describe(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self._cfn.describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        return dict(stacks[0]) if stacks else None

    def status(self, name: str) -> str | None:
        stack = self.describe(name)
        return None if stack is None else str(stack["StackStatus"])

    def outputs(self, name: str) -> dict[str, str]:
        stack = self.describe(name) or {}
        return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])}

    def _wait(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._max_wait
        while not check():
            if time.monotonic() > deadline:
                raise DeployError(f"gave up waiting for {what} after {self._max_wait:.0f}s")
            time.sleep(self._poll)

    def failure_reasons(self, name: str, limit: int = 10) -> list[str]:
        try:
            events = self._cfn.describe_stack_events(StackName=name)["StackEvents"]
        except ClientError:
            return []
        reasons = []
        for event in events:
            reason = event.get("ResourceStatusReason", "")
            if event.get("ResourceStatus", "").endswith("_FAILED") and "cancelled" not in reason:
                reasons.append(f"{event['LogicalResourceId']}: {reason}")
        return reasons[:limit]

    def _settle(self, name: str, wanted: str) -> None:
        final: dict[str, str] = {}

        def done() -> bool:
            status = self.status(name) or "DELETE_COMPLETE"
            final["status"] = status
            return not status.endswith("_IN_PROGRESS")

        self._wait(f"stack {name}", done)
        if final["status"] != wanted:
            reasons = "\n  ".join(self.failure_reasons(name)) or "(no failure events)"
            raise DeployError(f"stack {name} ended {final['status']}, not {wanted}:\n  {reasons}")

    def _parameter_list(
        self, name: str, parameters: Mapping[str, str | None], updating: bool
    ) -> list[dict[str, Any]]:
        """CloudFormation's parameters. A value of None keeps the stack's current value on an
        update (what ``aws cloudformation deploy`` does for a parameter it is not given), and
        leaves the template's default otherwise: on a create, or when the stack does not have
        that parameter yet. The current value is read and sent back rather than asked for with
        ``UsePreviousValue``: the same on AWS for a parameter that is not ``NoEcho`` (none of
        ours is), and moto fails on ``UsePreviousValue`` for a parameter left at its default."""
        current: dict[str, str] = {}
        if updating and any(v is None for v in parameters.values()):
            stack = self.describe(name) or {}
            current = {
                p["ParameterKey"]: str(p.get("ParameterValue", ""))
                for p in stack.get("Parameters", [])
            }
        listed: list[dict[str, Any]] = []
        for key, value in parameters.items():
            if value is None:
                if key not in current:
                    continue
                value = current[key]
            listed.append({"ParameterKey": key, "ParameterValue": value})
        return listed

    def deploy(
        self,
        name: str,
        template: Mapping[str, Any],
        parameters: Mapping[str, str | None],
        tags: Mapping[str, str],
        template_url: Callable[[str], str] | None = None,
    ) -> StackResult:
        """Create or update stack ``name``; ``template_url`` stores an oversized body and
        returns its URL (CloudFormation takes at most 51,200 bytes inline). A parameter given
        as None keeps its current value (see ``_parameter_list``)."""
        body = json.dumps(self.render(template), separators=(",", ":"))
        status = self.status(name)
        if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS"):
            # A first create that failed (or never ran) leaves a stack that cannot be updated.
            self._say(f"stack {name}: {status} from an earlier attempt; deleting it first")
            self.delete(name)
            status = None
        elif status is not None and status.endswith("_IN_PROGRESS"):
            raise DeployError(f"stack {name} is busy ({status}); wait for it and run again")
        source: dict[str, str]
        if len(body.encode()) <= TEMPLATE_BODY_LIMIT:
            source = {"TemplateBody": body}
        elif template_url is not None:
            source = {"TemplateURL": template_url(body)}
        else:
            raise DeployError(f"template of {name} is over {TEMPLATE_BODY_LIMIT} bytes")
        request: dict[str, Any] = {
            "StackName": name,
            "Parameters": self._parameter_list(name, parameters, updating=status is not None),
            "Capabilities": CAPABILITIES,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            **source,
        }
        if status is None:
            self._cfn.create_stack(**request)
            self._say(f"stack {name}: creating...")
        else:
            try:
                self._cfn.update_stack(**request)
            except ClientError as exc:
                if any(text in str(exc) for text in _NO_CHANGES):
                    self._say(f"stack {name}: unchanged")
                    return StackResult(name, "unchanged", self.outputs(name))
                raise
            self._say(f"stack {name}: updating...")
        wanted = "CREATE_COMPLETE" if status is None else "UPDATE_COMPLETE"
        self._settle(name, wanted)
        action = "created" if status is None else "updated"
        self._say(f"stack {name}: {action}")
        return StackResult(name, action, self.outputs(name))

    def delete(self, name: str) -> bool:
        """Delete stack ``name`` and wait; False when there was none."""
        stack = self.describe(name)
        if stack is None:
            return False
        stack_id = stack["StackId"]
        self._cfn.delete_stack(StackName=stack_id)

        def gone() -> bool:
            # Deleted stacks stay describable by id (DELETE_COMPLETE) or vanish by name.
            status = self.status(stack_id)
            if status == "DELETE_FAILED":
                reasons = "\n  ".join(self.failure_reasons(stack_id)) or "(no failure events)"
                raise DeployError(f"stack {name} could not be deleted:\n  {reasons}")
            return status in (None, "DELETE_COMPLETE")

        self._wait(f"deletion of stack {name}", gone)
        self._say(f"stack {name}: deleted")
        return True


# ---------------------------------------------------------------------------------------------
# The whole deploy


def stage_path(service: ServiceDef) -> str:
    return str(service.config().get("api_gateway_stage", "api"))


def reserved_concurrency(template: Mapping[str, Any]) -> int:
    return sum(
        int(r.get("Properties", {}).get("ReservedConcurrentExecutions", 0) or 0)
        for r in template.get("Resources", {}).values()
        if r.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    )


def concurrency_problem(wanted: int, limit: int) -> str | None:
    """Why ``wanted`` reserved executions cannot be had in an account limited to ``limit``.

    New accounts often have a limit of 10, and Lambda keeps 10 unreserved, so any reserved
    concurrency fails there late in a stack create, with a rollback. Said up front instead.
    """
    if wanted == 0 or wanted <= limit - UNRESERVED_MINIMUM:
        return None
    return (
        f"the functions reserve {wanted} concurrent executions but this account's limit is "
        f"{limit} and Lambda keeps {UNRESERVED_MINIMUM} unreserved; lower or remove "
        "reserved_concurrency in the stage of each .chalice/config.json, or ask AWS to raise "
        "the limit (Service Quotas: Lambda, Concurrent executions)"
    )


Packager = Callable[[str], list[package.Packaged]]


def _package(stage: str) -> list[package.Packaged]:
    return package.package_all(stage)


class Deployer:
    """The order of a deploy and a destroy, over the three call layers above."""

    def __init__(
        self,
        session: Any,
        target: Target,
        naming: Naming,
        packager: Packager = _package,
        stacks: Stacks | None = None,
        say: Say = _say,
        alarm_email: str | None = None,
    ) -> None:
        self._session = session
        self.target = target
        self.naming = naming
        self._packager = packager
        self._say = say
        # None: the observability stack keeps the address it has (none on a first deploy);
        # "": no address (the subscription is removed).
        self.alarm_email = alarm_email
        self.stacks = stacks or Stacks(
            session.client("cloudformation"), target.poll_seconds, target.max_wait_seconds, say
        )
        self.keys = KeyStore(session.client("secretsmanager"), session.client("ssm"), naming, say)
        self._account_id: str | None = None

    def _account(self) -> str:
        if self._account_id is None:
            self._account_id = self._caller_account()
        return self._account_id

    def _caller_account(self) -> str:
        try:
            return str(self._session.client("sts").get_caller_identity()["Account"])
        except EndpointConnectionError as exc:
            local = self.target.is_localstack
            hint = " Is LocalStack running (make localstack-up)?" if local else ""
            raise DeployError(f"cannot reach {exc.kwargs.get('endpoint_url')}.{hint}") from exc
        except (ClientError, BotoCoreError) as exc:
            raise DeployError(
                f"no usable AWS credentials ({exc}); configure them as for the AWS CLI"
            ) from exc

    def bucket(self) -> ArtifactBucket:
        account = self._account()
        name = self.naming.bucket(account, self.target.region)
        return ArtifactBucket(
            self._session.client("s3"), name, self.target.region, account, self._say
        )

    def check_concurrency(self, templates: Iterable[Mapping[str, Any]]) -> None:
        """Fail before any stack if the reserved concurrency cannot fit the account's limit."""
        wanted = sum(reserved_concurrency(t) for t in templates)
        if wanted == 0:
            return
        try:
            settings = self._session.client("lambda").get_account_settings()
            limit = int(settings["AccountLimit"]["ConcurrentExecutions"])
        except (ClientError, BotoCoreError, KeyError, NotImplementedError):
            self._say("lambda: could not read the account's concurrency limit; not checked")
            return
        problem = concurrency_problem(wanted, limit)
        if problem:
            raise DeployError(problem)

    def _parameters(
        self, template: Mapping[str, Any], values: Mapping[str, str | None]
    ) -> dict[str, str | None]:
        """The values this template declares, so each stack gets only its own parameters."""
        declared = template.get("Parameters", {})
        missing = [k for k, v in declared.items() if "Default" not in v and k not in values]
        if missing:
            raise DeployError(f"no value for template parameter(s) {', '.join(missing)}")
        return {k: v for k, v in values.items() if k in declared}

    def deploy(self) -> dict[str, str]:
        """Deploy every service; return each one's public URL (the gateway's last)."""
        where = self.target.endpoint_url or "AWS"
        region, account = self.target.region, self._account()
        self._say(f"deploying stage {self.naming.stage} to {where} ({region}), account {account}")
        # Package and check first: a build or quota problem stops the deploy before it has
        # created anything.
        self._say("packaging...")
        built = {p.service.name: p for p in self._packager(self.naming.stage)}
        missing = [s.name for s in SERVICES if s.name not in built]
        if missing:
            raise DeployError(f"packaging produced nothing for {', '.join(missing)}")
        self.check_concurrency(p.template() for p in built.values())
        # The bucket before the keys: a bucket that is not ours stops the deploy with nothing
        # of the stage created yet.
        bucket = self.bucket()
        bucket.ensure()
        refs = self.keys.ensure()

        def template_url(prefix: str) -> Callable[[str], str]:
            def store(body: str) -> str:
                digest = hashlib.sha256(body.encode()).hexdigest()[:32]
                key = f"{prefix}/templates/{digest}.json"
                bucket.put_text(key, body)
                return bucket.url(key, self.target.endpoint_url)

            return store

        values: dict[str, str | None] = {
            "JwksParameterName": refs.jwks_parameter,
            "SigningKeySecretArn": refs.secret_arn,
        }
        # The bus first: the services' rules are made on it, and their relays publish to it.
        bus = self.stacks.deploy(
            self.naming.events_stack,
            eventstack.bus_template(self.naming.stage),
            {},
            self.naming.tags,
        )
        for output in (eventstack.BUS_NAME_PARAMETER, eventstack.BUS_ARN_PARAMETER):
            if output not in bus.outputs:
                raise DeployError(f"stack {self.naming.events_stack} has no output {output}")
            values[output] = bus.outputs[output]
        urls: dict[str, str] = {}
        outputs: dict[str, dict[str, str]] = {}
        for service in (USER, PRODUCT, GATEWAY):
            packaged = built[service.name]
            template = with_artifacts(
                packaged.template(),
                packaged.directory,
                lambda path, name=service.name: bucket.upload(path, name),
                bucket.name,
            )
            result = self.stacks.deploy(
                self.naming.stack(service),
                template,
                self._parameters(template, values),
                self.naming.tags,
                template_url(service.name),
            )
            outputs[service.name] = result.outputs
            if service is USER:
                values["UserApiUrl"] = self.target.service_url(result.outputs, stage_path(service))
            elif service is PRODUCT:
                values["ProductApiUrl"] = self.target.service_url(
                    result.outputs, stage_path(service)
                )
            urls[service.name] = self.target.public_url(result.outputs, stage_path(service))
        watched = self._deploy_observability(outputs, template_url(observability.STACK_PART))
        for name, url in urls.items():
            self._say(f"{name:12} {url}")
        # The console's URL means nothing for LocalStack: its name is what to look up there.
        where = "DashboardName" if self.target.is_localstack else "DashboardUrl"
        self._say(f"Dashboard: {watched.outputs.get(where, '(no output)')}")
        self._say(f"Gateway URL: {urls[GATEWAY.name]}")
        return urls

    def _deploy_observability(
        self, outputs: Mapping[str, Mapping[str, str]], template_url: Callable[[str], str]
    ) -> StackResult:
        """The alarms, dashboard and saved queries, once everything they watch exists: their
        table names are the service stacks' outputs."""
        template = observability.template(self.naming.stage)
        try:
            values = observability.parameter_values(outputs, self.alarm_email)
        except KeyError as exc:
            raise DeployError(f"cannot wire the observability stack: {exc.args[0]}") from exc
        result = self.stacks.deploy(
            self.naming.observability_stack,
            template,
            self._parameters(template, values),
            self.naming.tags,
            template_url,
        )
        if self.alarm_email:
            self._say(
                f"alarms: {self.alarm_email} subscribed to {result.outputs.get('AlarmTopicArn')}"
                " (SNS mails a confirmation link first; no alarm mail until it is followed)"
            )
        return result

    def destroy(self) -> None:
        """Remove the stacks (the observability stack first: it watches all the others; then the
        gateway: it depends on the other two; the bus last: the services' rules are on it), the
        bucket, the keys."""
        where = self.target.endpoint_url or "AWS"
        self._say(f"destroying stage {self.naming.stage} on {where} ({self.target.region})")
        if not self.stacks.delete(self.naming.observability_stack):
            self._say(f"stack {self.naming.observability_stack}: not there")
        gateway_url = None
        outputs = self.stacks.outputs(self.naming.stack(GATEWAY))
        if outputs:
            gateway_url = self.target.public_url(outputs, stage_path(GATEWAY))
        for service in (GATEWAY, PRODUCT, USER):
            if not self.stacks.delete(self.naming.stack(service)):
                self._say(f"stack {self.naming.stack(service)}: not there")
        if not self.stacks.delete(self.naming.events_stack):
            self._say(f"stack {self.naming.events_stack}: not there")
        self.bucket().destroy()
        self.keys.destroy()
        if gateway_url:
            self._say(f"Gateway URL (removed): {gateway_url}")
        self._say(f"stage {self.naming.stage} destroyed")


def _region(session: Any) -> str:
    region = session.region_name
    if not region:
        raise DeployError(
            "no AWS region configured: set AWS_REGION / AWS_DEFAULT_REGION or a profile region"
        )
    return str(region)


def build_deployer(stage: str, localstack: bool, alarm_email: str | None = None) -> Deployer:
    endpoint = localstack_environment() if localstack else os.environ.get("AWS_ENDPOINT_URL")
    session = boto3.session.Session()
    region = _region(session)
    target = Target(
        region=region,
        endpoint_url=endpoint,
        poll_seconds=2.0 if localstack else 10.0,
        max_wait_seconds=900.0 if localstack else 2700.0,
    )
    for service in SERVICES:
        if stage not in service.config().get("stages", {}):
            raise DeployError(f"{service.name}/.chalice/config.json has no stage {stage!r}")
    return Deployer(session, target, Naming(stage), alarm_email=alarm_email)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("deploy", "destroy"))
    parser.add_argument("--stage", default="dev")
    parser.add_argument(
        "--localstack",
        action="store_true",
        help=f"deploy to LocalStack (AWS_ENDPOINT_URL, default {LOCALSTACK_ENDPOINT})",
    )
    parser.add_argument(
        "--alarm-email",
        default=os.environ.get("ALARM_EMAIL"),
        help="mail the stage's alarms to this address (default $ALARM_EMAIL; when neither is "
        "given the stack keeps the address it has; '' removes it)",
    )
    args = parser.parse_args(argv)
    try:
        deployer = build_deployer(args.stage, args.localstack, args.alarm_email)
        if args.action == "deploy":
            deployer.deploy()
        else:
            deployer.destroy()
    except (DeployError, package.PackageError) as exc:
        print(f"{args.action} failed: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"{args.action} failed: AWS said: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
