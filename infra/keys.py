"""The token keys of one stage, outside its stacks: the Ed25519 private key in Secrets Manager
and the public JWKS in an SSM parameter, made by ``infra/deploy.py`` before any stack reads them.

The private key is generated here, never by CloudFormation (a template or a custom resource
would have to carry or produce it), and the secret outlives every stack update. The secret is
authoritative: created once; on later deploys the parameter must list the secret's key id (a
JWKS may list more during a rotation) and is rewritten from the secret if it does not, so a
half-finished earlier run or a hand edit cannot leave tokens unverifiable. Key material is never
printed or logged; only names and ARNs are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from svckit import keys
from tools.stages import Naming


@dataclass(frozen=True)
class KeyRefs:
    secret_arn: str
    jwks_parameter: str
    created: bool


def _missing(exc: ClientError, code: str) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) == code


def _compact(jwks_json: str) -> str:
    """The JWKS on one line: it travels in a Lambda environment (4 KB for all variables)."""
    return json.dumps(json.loads(jwks_json), separators=(",", ":"))


def jwks_for(private_pem: str) -> str:
    public = keys.load_private_key(private_pem).public_key()
    return _compact(json.dumps({"keys": [keys.public_jwk(public)]}))


def kids(jwks_json: str) -> set[str]:
    try:
        return {str(k.get("kid")) for k in json.loads(jwks_json).get("keys", [])}
    except (ValueError, AttributeError):
        return set()


def _say(message: str) -> None:
    print(message, flush=True)


class KeyStore:
    def __init__(
        self,
        secrets: Any,
        ssm: Any,
        naming: Naming,
        say: Callable[[str], None] = _say,
    ) -> None:
        self._secrets, self._ssm, self._naming, self._say = secrets, ssm, naming, say

    def _describe_secret(self) -> dict[str, Any] | None:
        try:
            return dict(self._secrets.describe_secret(SecretId=self._naming.signing_key_secret))
        except ClientError as exc:
            if _missing(exc, "ResourceNotFoundException"):
                return None
            raise

    def _parameter(self) -> str | None:
        try:
            found = self._ssm.get_parameter(Name=self._naming.jwks_parameter)
        except ClientError as exc:
            if _missing(exc, "ParameterNotFound"):
                return None
            raise
        return str(found["Parameter"]["Value"])

    def _put_parameter(self, jwks_json: str) -> None:
        self._ssm.put_parameter(
            Name=self._naming.jwks_parameter, Value=jwks_json, Type="String", Overwrite=True,
            Description="Public JWKS that verifies the shop's access tokens (not secret)",
        )  # fmt: skip

    def ensure(self) -> KeyRefs:
        name, parameter = self._naming.signing_key_secret, self._naming.jwks_parameter
        secret = self._describe_secret()
        if secret is not None and secret.get("DeletedDate"):
            # Scheduled for deletion by hand: the name stays taken until then, so bring it back.
            self._secrets.restore_secret(SecretId=name)
            self._say(f"keys: restored secret {name}, which was scheduled for deletion")
        if secret is None:
            pem, jwks_json = keys.new_key_material()
            arn = self._secrets.create_secret(
                Name=name, SecretString=pem,
                Description="Ed25519 key that signs the shop's access tokens (user_api only)",
                Tags=[{"Key": k, "Value": v} for k, v in self._naming.tags.items()],
            )["ARN"]  # fmt: skip
            self._put_parameter(_compact(jwks_json))
            self._say(f"keys: created secret {name} and parameter {parameter}")
            return KeyRefs(str(arn), parameter, created=True)
        arn = str(secret["ARN"])
        expected = jwks_for(str(self._secrets.get_secret_value(SecretId=arn)["SecretString"]))
        current = self._parameter()
        if current is None or not kids(expected) <= kids(current):
            self._put_parameter(expected)
            self._say(f"keys: rewrote parameter {parameter} from the secret")
        else:
            self._say(f"keys: reusing secret {name} and parameter {parameter}")
        return KeyRefs(arn, parameter, created=False)

    def destroy(self) -> None:
        # Without recovery: a secret in its recovery window keeps its name taken, and the next
        # deploy of the stage would fail to create it.
        try:
            self._secrets.delete_secret(
                SecretId=self._naming.signing_key_secret, ForceDeleteWithoutRecovery=True
            )
            self._say(f"keys: deleted secret {self._naming.signing_key_secret}")
        except ClientError as exc:
            if not _missing(exc, "ResourceNotFoundException"):
                raise
        try:
            self._ssm.delete_parameter(Name=self._naming.jwks_parameter)
            self._say(f"keys: deleted parameter {self._naming.jwks_parameter}")
        except ClientError as exc:
            if not _missing(exc, "ParameterNotFound"):
                raise
