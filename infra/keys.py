"""A stage's token keys, outside its stacks, made by ``infra/deploy.py`` before any stack reads
them: the Ed25519 private key in Secrets Manager, the public JWKS in an SSM parameter.

Generated here, never by CloudFormation (a template or custom resource would carry the key). The
secret is authoritative and created once; the parameter must list its key id (a JWKS may list
more during a rotation) or is rewritten from it, so a half-finished run or a hand edit cannot
leave tokens unverifiable. Key material is never printed; only names and ARNs are.
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
    created: bool


def _unless_missing(code: str, call: Callable[..., Any], **params: Any) -> Any:
    """``call(**params)``, or None when AWS answers ``code`` (what it names does not exist)."""
    try:
        return call(**params)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) == code:
            return None
        raise


def jwks_for(private_pem: str) -> str:
    """The JWKS on one line: it travels in a Lambda environment (4 KB for all variables)."""
    public = keys.public_jwk(keys.load_private_key(private_pem).public_key())
    return json.dumps({"keys": [public]}, separators=(",", ":"))


def kids(jwks_json: str) -> set[str]:
    try:
        return {str(k.get("kid")) for k in json.loads(jwks_json).get("keys", [])}
    except (ValueError, AttributeError):
        return set()


def _say(message: str) -> None:
    print(message, flush=True)  # in order with the cdk output that follows


@dataclass
class KeyStore:
    secrets: Any  # boto3 clients
    ssm: Any
    naming: Naming
    say: Callable[[str], None] = _say

    def _put_parameter(self, jwks_json: str) -> None:
        self.ssm.put_parameter(
            Name=self.naming.jwks_parameter, Value=jwks_json, Type="String", Overwrite=True,
            Description="Public JWKS that verifies the shop's access tokens (not secret)",
        )  # fmt: skip

    def ensure(self) -> KeyRefs:
        name, parameter = self.naming.signing_key_secret, self.naming.jwks_parameter
        secret = _unless_missing(
            "ResourceNotFoundException", self.secrets.describe_secret, SecretId=name
        )
        if secret is not None and secret.get("DeletedDate"):
            # Scheduled for deletion by hand: the name stays taken until then, so bring it back.
            self.secrets.restore_secret(SecretId=name)
            self.say(f"keys: restored secret {name}, which was scheduled for deletion")
        if secret is None:
            pem = keys.new_key_material()[0]
            arn = self.secrets.create_secret(
                Name=name, SecretString=pem,
                Description="Ed25519 key that signs the shop's access tokens (user_api only)",
                Tags=[{"Key": k, "Value": v} for k, v in self.naming.tags.items()],
            )["ARN"]  # fmt: skip
            self._put_parameter(jwks_for(pem))
            self.say(f"keys: created secret {name} and parameter {parameter}")
            return KeyRefs(str(arn), created=True)
        arn = str(secret["ARN"])
        expected = jwks_for(str(self.secrets.get_secret_value(SecretId=arn)["SecretString"]))
        current = _unless_missing("ParameterNotFound", self.ssm.get_parameter, Name=parameter)
        if current is None or not kids(expected) <= kids(str(current["Parameter"]["Value"])):
            self._put_parameter(expected)
            self.say(f"keys: rewrote parameter {parameter} from the secret")
        else:
            self.say(f"keys: reusing secret {name} and parameter {parameter}")
        return KeyRefs(arn, created=False)

    def destroy(self) -> None:
        # Without recovery: a secret in its recovery window keeps its name taken, and the next
        # deploy of the stage would fail to create it.
        name, parameter = self.naming.signing_key_secret, self.naming.jwks_parameter
        if _unless_missing("ResourceNotFoundException", self.secrets.delete_secret,
                           SecretId=name, ForceDeleteWithoutRecovery=True):  # fmt: skip
            self.say(f"keys: deleted secret {name}")
        if _unless_missing("ParameterNotFound", self.ssm.delete_parameter, Name=parameter):
            self.say(f"keys: deleted parameter {parameter}")
