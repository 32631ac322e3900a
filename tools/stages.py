"""A deployed stage's names outside any one template, from the stage name alone (its stacks, the
signing key's secret, the JWKS parameter), and where LocalStack is. No ``aws_cdk`` (its import
starts Node): ``tools/admin.py`` and ``tools/events.py`` find a stage by these names too.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from dataclasses import dataclass

from tools import topology
from tools.services import SERVICES, ServiceDef

PROJECT = topology.PROJECT
# The host's LocalStack by address: ``localhost.localstack.cloud`` does not resolve everywhere.
LOCALSTACK_ENDPOINT = "http://127.0.0.1:4566"
DEFAULT_STAGE = "dev"
# CDK context keys (``cdk synth -c stage=prod``); LOCALSTACK=1 in the environment does what
# -c localstack=true does (the Makefile sets it for cdklocal).
STAGE_CONTEXT, LOCALSTACK_CONTEXT = "stage", "localstack"
LOCALSTACK_ENDPOINT_CONTEXT = "localstackEndpoint"  # where the gateway reaches LocalStack's APIs
_STAGE_SHAPE = re.compile(r"[a-z][a-z0-9-]{0,15}")


JWKS_VERSION_CONTEXT = "jwksVersion"  # the JWKS's SSM version the stacks reference


class StageNameError(ValueError):
    """A stage name that cannot be part of the stage's resource names."""


@dataclass(frozen=True)
class Naming:
    """Never from a stage's settings: a new stage starts as a copy of another's section in
    ``config.json``, and a name read from there would be the other stage's (the signing key's
    once was, so a copied stage shared dev's key and its destroy deleted it)."""

    stage: str

    def __post_init__(self) -> None:
        if not _STAGE_SHAPE.fullmatch(self.stage):
            raise StageNameError(
                f"stage {self.stage!r} must be 1-16 lower-case letters, digits or '-', starting "
                "with a letter (it becomes part of stack, queue and function names)")  # fmt: skip

    def require_defined(self) -> None:
        """A stage missing from a ``.chalice/config.json`` would be packaged without its
        policies and settings: refused before anything is made."""
        undefined = [s.name for s in SERVICES if self.stage not in s.config().get("stages", {})]
        if undefined:
            raise StageNameError(
                f"stage {self.stage!r} has no section in the .chalice/config.json of "
                f"{', '.join(undefined)}: add one (copy dev's) before deploying it")  # fmt: skip

    def stack_name(self, part: str) -> str:
        return f"{PROJECT}-{self.stage}-{part}"

    def stack(self, service: ServiceDef) -> str:
        return self.stack_name(service.name.replace("_", "-"))

    # The bus's stack is first up, last down; the observability stack last up, first down.
    events_stack = property(lambda self: self.stack_name("events"))
    observability_stack = property(lambda self: self.stack_name("observability"))
    dashboard = property(lambda self: f"{PROJECT}-{self.stage}")
    signing_key_secret = property(lambda self: f"{PROJECT}/{self.stage}/jwt-signing-key")
    jwks_parameter = property(lambda self: f"/{PROJECT}/{self.stage}/jwt-jwks")
    tags = property(lambda self: {"project": PROJECT, "stage": self.stage})


def localstack_environment(environ: MutableMapping[str, str] | None = None) -> str:
    """Point boto3 at LocalStack (``AWS_ENDPOINT_URL``, else :data:`LOCALSTACK_ENDPOINT`); return
    the endpoint. Real credentials give way to LocalStack's test ones, so they never leave for a
    local endpoint, and a profile (which might carry an endpoint or a role) is dropped."""
    env = os.environ if environ is None else environ
    endpoint = env["AWS_ENDPOINT_URL"] = env.get("AWS_ENDPOINT_URL") or LOCALSTACK_ENDPOINT
    env.setdefault("AWS_ENDPOINT_URL_S3", endpoint)
    env["AWS_ACCESS_KEY_ID"] = "test"
    env["AWS_SECRET_ACCESS_KEY"] = "test"  # noqa: S105 - LocalStack's documented dummy secret
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return endpoint
