"""Tokens as an attacker or a test builds them, for every layer that verifies tokens.

The verifying code is svckit's; these helpers make the inputs it must accept or refuse:
claims like user_api's, EdDSA signatures under a chosen kid, and HS256 made by hand (PyJWT
refuses PEM-shaped HMAC keys; an attacker's tooling does not).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from svckit import keys
from svckit.tokens import AUDIENCE, ISSUER


def claims(**overrides: Any) -> dict[str, Any]:
    """What user_api puts in a token; an override of ``None`` removes that claim."""
    now = int(time.time())
    base = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "roles": [],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def local_signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    return keys.load_private_key((keys_dir / keys.SIGNING_KEY_FILE).read_text())


def kid_of(key: Ed25519PrivateKey) -> str:
    return keys.key_id(key.public_key())


def eddsa(key: Ed25519PrivateKey, kid: str, payload: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, **headers})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def hs256(secret: bytes, payload: dict[str, Any], kid: str) -> str:
    """An HS256 token keyed with ``secret`` (the algorithm-confusion attack when the secret is
    the public key)."""
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, payload)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"
