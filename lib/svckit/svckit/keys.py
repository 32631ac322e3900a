"""Where token keys come from, and how local ones are made.

Settings name key material by reference, so one code path serves every place the system runs:

* ``file:PATH``: a file; a relative path is taken from the Chalice project folder, so a stage's
  config can point at the git-ignored ``.local/keys`` folder whatever the working directory is.
* ``secretsmanager:ID``: a Secrets Manager secret (the deployed signing key; only user_api's
  role may read it).
* anything else: the material itself (the deployed public JWKS arrives inline, resolved by
  CloudFormation from an SSM parameter, so verifying services make no call at cold start).

Keys are Ed25519. The key id is the RFC 7638 thumbprint of the public key, so it is derived,
never configured, and a rotated key gets a new id by construction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

SIGNING_KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"


def resolve(reference: str, base_dir: Path) -> str:
    """The text a key reference points at (see the module docstring for the forms)."""
    if reference.startswith("file:"):
        path = Path(reference[len("file:") :])
        if not path.is_absolute():
            path = base_dir / path
        return path.read_text(encoding="utf-8")
    if reference.startswith("secretsmanager:"):
        secret = _secrets_client().get_secret_value(SecretId=reference[len("secretsmanager:") :])
        return str(secret["SecretString"])
    return reference


def _secrets_client() -> Any:
    """A Secrets Manager client bounded like every other (``svckit.aws``).

    boto3's defaults wait 60 s to connect and 60 s to read, longer than the function's whole
    timeout: a slow endpoint would hang the cold start until Lambda kills it. Made per call: the
    key is read once per cold start, so there is nothing to cache.
    """
    from svckit import aws  # deferred: only the signing service pays for boto3's import

    return aws.make_client("secretsmanager")


def key_id(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: SHA-256 over the canonical members of the public JWK."""
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": key_id(public_key), "alg": "EdDSA", "use": "sig"}


def load_private_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key must be an Ed25519 private key")
    return key


def new_key_material() -> tuple[str, str]:
    """A fresh Ed25519 key: (private key PEM, JWKS JSON holding only its public half)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwks = json.dumps({"keys": [public_jwk(private.public_key())]}, indent=2)
    return pem, jwks


def ensure_local_keys(directory: Path) -> bool:
    """Create the local signing key and JWKS once; return True when they were created.

    The private key is written 0600 into a git-ignored folder and never printed.
    """
    private_path = directory / SIGNING_KEY_FILE
    jwks_path = directory / JWKS_FILE
    if private_path.exists() and jwks_path.exists():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    pem, jwks = new_key_material()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(pem)
    jwks_path.write_text(jwks + "\n", encoding="utf-8")
    return True
