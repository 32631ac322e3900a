"""Token verification against the attacks the contract names, with PyJWT as the attacker's tool."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from chalice import UnauthorizedError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from svckit import keys
from svckit.tokens import TokenIssuer, TokenVerifier
from tests.support.tokens import claims, hs256


@pytest.fixture(scope="module")
def material():
    return keys.new_key_material()


@pytest.fixture(scope="module")
def issuer(material):
    return TokenIssuer(material[0], ttl_seconds=600)


@pytest.fixture(scope="module")
def verifier(material):
    return TokenVerifier(material[1])


@pytest.fixture(scope="module")
def kid(material):
    return json.loads(material[1])["keys"][0]["kid"]


def reason(verifier, token) -> str:
    with pytest.raises(UnauthorizedError) as caught:
        verifier.verify(token)
    return str(caught.value)


def test_a_genuine_token_verifies_with_roles(issuer, verifier):
    principal = verifier.verify(issuer.issue("Alice", ["admin"]))
    assert principal.username == "Alice"
    assert principal.is_admin
    assert principal.is_user("alice")


def test_alg_none_is_rejected(verifier, kid):
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": kid})
    assert reason(verifier, token) == "token is invalid: The specified alg value is not allowed"


def test_hs256_signed_with_the_public_key_is_rejected(verifier, material, kid):
    """Algorithm confusion: the public key used as an HMAC secret."""
    x = json.loads(material[1])["keys"][0]["x"]
    secret = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    token = hs256(secret, claims(), kid)
    assert reason(verifier, token).startswith("token is invalid")


def test_a_signature_by_another_key_under_the_same_kid_is_rejected(verifier, kid):
    forged = jwt.encode(
        claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    assert reason(verifier, forged) == "token is invalid: Signature verification failed"


def test_an_unknown_kid_is_rejected(verifier, material):
    private = keys.load_private_key(material[0])
    token = jwt.encode(claims(), private, algorithm="EdDSA", headers={"kid": "someone-else"})
    assert reason(verifier, token) == "token is signed by an unknown key"


def test_expired_token_is_rejected_beyond_the_clock_skew(verifier, material, kid):
    private = keys.load_private_key(material[0])
    now = int(time.time())
    stale = jwt.encode(
        claims(iat=now - 700, exp=now - 60), private, algorithm="EdDSA", headers={"kid": kid}
    )
    assert reason(verifier, stale) == "token has expired"
    within_skew = jwt.encode(
        claims(iat=now - 700, exp=now - 5), private, algorithm="EdDSA", headers={"kid": kid}
    )
    assert verifier.verify(within_skew).username == "alice"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"iss": "someone-else"}, "token is invalid: Invalid issuer"),
        ({"aud": "another-system"}, "token is invalid: Audience doesn't match"),
        ({"sub": None}, "token is invalid"),
        ({"exp": None}, "token is invalid"),
    ],
)
def test_wrong_issuer_audience_or_missing_claims_are_rejected(
    verifier, material, kid, override, expected
):
    private = keys.load_private_key(material[0])
    token = jwt.encode(claims(**override), private, algorithm="EdDSA", headers={"kid": kid})
    assert reason(verifier, token).startswith(expected)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30."])
def test_garbage_is_rejected(verifier, token):
    reason(verifier, token)


def test_rotation_two_keys_in_the_jwks_both_verify(material):
    new_pem, new_jwks = keys.new_key_material()
    both = json.dumps({"keys": json.loads(material[1])["keys"] + json.loads(new_jwks)["keys"]})
    verifier = TokenVerifier(both)
    assert verifier.verify(TokenIssuer(material[0], 60).issue("old")).username == "old"
    assert verifier.verify(TokenIssuer(new_pem, 60).issue("new")).username == "new"


def test_a_jwks_without_eddsa_keys_is_refused():
    with pytest.raises(ValueError, match="no EdDSA key"):
        TokenVerifier(
            json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x", "alg": "HS256"}]})
        )


def test_key_id_is_the_rfc_7638_thumbprint():
    """RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key."""
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    assert keys.key_id(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_local_keys_are_made_once_private_and_0600(tmp_path):
    assert keys.ensure_local_keys(tmp_path) is True
    private = tmp_path / keys.SIGNING_KEY_FILE
    first = private.read_text()
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert keys.ensure_local_keys(tmp_path) is False
    assert private.read_text() == first
    jwks = json.loads((tmp_path / keys.JWKS_FILE).read_text())
    assert "d" not in jwks["keys"][0]  # the public set never carries the private part
    assert keys.key_id(keys.load_private_key(first).public_key()) == jwks["keys"][0]["kid"]


def test_resolve_reads_files_relative_to_the_project_and_passes_literals(tmp_path):
    (tmp_path / "k.txt").write_text("material")
    assert keys.resolve("file:k.txt", tmp_path) == "material"
    assert keys.resolve('{"keys": []}', tmp_path) == '{"keys": []}'


def test_a_non_ed25519_signing_key_is_refused():
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        keys.load_private_key(pem.decode())


def test_the_signing_key_is_read_with_short_timeouts_and_bounded_retries(monkeypatch):
    """boto3's defaults (60 s connect and read) outlast the function's own timeout, so a slow
    Secrets Manager would hang a cold start until Lambda kills it; the client is bounded like
    svckit.dynamo's."""
    import boto3
    from moto import mock_aws

    made = []
    real_client = boto3.client

    def recording_client(*args, **kwargs):
        client = real_client(*args, **kwargs)
        made.append(client)
        return client

    monkeypatch.setattr(boto3, "client", recording_client)
    with mock_aws():
        secrets = real_client("secretsmanager", region_name="us-east-1")
        arn = secrets.create_secret(Name="shop/t/jwt-signing-key", SecretString="pem")["ARN"]
        assert keys.resolve(f"secretsmanager:{arn}", Path(".")) == "pem"
    [client] = made
    assert client.meta.service_model.service_name == "secretsmanager"
    config = client.meta.config
    from svckit import aws

    spent = aws.budget()
    assert (config.connect_timeout, config.read_timeout) == (spent.connect, spent.read)
    assert config.retries == {"mode": "standard", "total_max_attempts": spent.attempts}


def test_a_token_from_one_stage_is_refused_in_another_even_under_the_same_key(
    material, monkeypatch
):
    """Issuer and audience name the stage (the ``STAGE`` setting, which ``make package`` sets), so
    a stage that shares another's key, as one copied from it once did, still refuses its tokens."""
    monkeypatch.setenv("STAGE", "dev")
    token = TokenIssuer(material[0], ttl_seconds=600).issue("alice")
    verifier = TokenVerifier(material[1])
    assert verifier.verify(token).username == "alice"
    claims_seen = jwt.decode(token, options={"verify_signature": False})
    assert "dev" in claims_seen["iss"]
    assert "dev" in claims_seen["aud"]
    monkeypatch.setenv("STAGE", "prod")
    assert reason(verifier, token).startswith("token is invalid")
    assert reason(TokenVerifier(material[1]), token).startswith("token is invalid")
    monkeypatch.delenv("STAGE")  # unset is the local stage: not dev either
    assert reason(verifier, token).startswith("token is invalid")
