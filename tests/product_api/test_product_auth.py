"""Who may add products: every token that must not verify gets a 401 and writes nothing.

product_api holds only the public JWKS, so these tests forge tokens the ways an attacker would:
expired, signed by another key under the real kid, ``alg: none``, HS256 keyed with the public key
(algorithm confusion), and valid signatures over the wrong issuer, audience or claims.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from svckit import keys
from tests.conftest import JSON, bearer
from tests.support.tokens import b64, claims, eddsa, hs256, kid_of, local_signing_key, unsigned
from tools import services

TABLE = services.PRODUCT.stage_env("local")["TABLE_NAME"]
CREATE_PATHS = ["/add_product", "/products"]
VALID = {"product_id": "p-1", "product_name": "Laptop"}
WRONG_ALG = "token is invalid: The specified alg value is not allowed"


@pytest.fixture
def signing_key(local_keys) -> Ed25519PrivateKey:
    return local_signing_key(local_keys)


@pytest.fixture
def kid(signing_key) -> str:
    return kid_of(signing_key)


def post(client, path: str, headers: dict):
    return client.http.post(path, headers={**JSON, **headers}, body=json.dumps(VALID))


def assert_401(response, message: str, tables) -> None:
    assert response.status_code == 401, response.body
    assert response.json_body == {"Code": "UnauthorizedError", "Message": message}
    assert tables.scan(TableName=TABLE)["Items"] == []


# Each case builds the Authorization header from (signing_key, kid, local_keys).
def _public_pem(key, _kid, _dir):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public_raw(key, _kid, _dir):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _jwks_text(_key, _kid, directory):
    return (directory / keys.JWKS_FILE).read_bytes()


def _tampered(key, kid, _dir):
    header, _, signature = eddsa(key, kid, claims()).split(".")
    return f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}"


CASES = {
    "missing header": (
        lambda k, kid, d: {},
        "Authorization header with a Bearer token is required",
    ),
    "basic scheme": (
        lambda k, kid, d: {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        "Authorization header must be 'Bearer <token>'",
    ),
    "bearer without token": (
        lambda k, kid, d: {"Authorization": "Bearer   "},
        "Authorization header must be 'Bearer <token>'",
    ),
    "bare token without scheme": (
        lambda k, kid, d: {"Authorization": eddsa(k, kid, claims())},
        "Authorization header must be 'Bearer <token>'",
    ),
    "garbage": (lambda k, kid, d: bearer("not-a-jwt"), "token is malformed"),
    "three garbage segments": (lambda k, kid, d: bearer("a.b.c"), "token is malformed"),
    "expired": (
        lambda k, kid, d: bearer(
            eddsa(k, kid, claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 120))
        ),
        "token has expired",
    ),
    "not yet valid": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(nbf=int(time.time()) + 600))),
        "token is invalid: The token is not yet valid (nbf)",
    ),
    "issued in the future": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(iat=int(time.time()) + 600))),
        "token is invalid: The token is not yet valid (iat)",
    ),
    "other ed25519 key, same kid": (
        lambda k, kid, d: bearer(eddsa(Ed25519PrivateKey.generate(), kid, claims())),
        "token is invalid: Signature verification failed",
    ),
    "payload tampered after signing": (
        lambda k, kid, d: bearer(_tampered(k, kid, d)),
        "token is invalid: Signature verification failed",
    ),
    "unknown kid": (
        lambda k, kid, d: bearer(eddsa(k, "someone-elses-key", claims())),
        "token is signed by an unknown key",
    ),
    "no kid": (
        lambda k, kid, d: bearer(jwt.encode(claims(), k, algorithm="EdDSA")),
        "token is signed by an unknown key",
    ),
    "alg none": (
        lambda k, kid, d: bearer(unsigned({"alg": "none", "kid": kid}, claims()) + "."),
        WRONG_ALG,
    ),
    "alg None": (
        lambda k, kid, d: bearer(unsigned({"alg": "None", "kid": kid}, claims()) + "."),
        WRONG_ALG,
    ),
    "alg none with the real signature": (
        lambda k, kid, d: bearer(
            unsigned({"alg": "none", "kid": kid}, claims())
            + "."
            + eddsa(k, kid, claims()).split(".")[2]
        ),
        WRONG_ALG,
    ),
    "hs256 keyed with the public key pem": (
        lambda k, kid, d: bearer(hs256(_public_pem(k, kid, d), claims(), kid)),
        WRONG_ALG,
    ),
    "hs256 keyed with the raw public key": (
        lambda k, kid, d: bearer(hs256(_public_raw(k, kid, d), claims(), kid)),
        WRONG_ALG,
    ),
    "hs256 keyed with the jwks": (
        lambda k, kid, d: bearer(hs256(_jwks_text(k, kid, d), claims(), kid)),
        WRONG_ALG,
    ),
    "es256 under the real kid": (
        lambda k, kid, d: bearer(
            jwt.encode(
                claims(),
                ec.generate_private_key(ec.SECP256R1()),
                algorithm="ES256",
                headers={"kid": kid},
            )
        ),
        WRONG_ALG,
    ),
    "wrong issuer": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(iss="evil_api"))),
        "token is invalid: Invalid issuer",
    ),
    "wrong audience": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(aud="another-shop"))),
        "token is invalid: Audience doesn't match",
    ),
    "missing sub": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(sub=None))),
        'token is invalid: Token is missing the "sub" claim',
    ),
    "missing exp": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(exp=None))),
        'token is invalid: Token is missing the "exp" claim',
    ),
    "missing iss": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(iss=None))),
        'token is invalid: Token is missing the "iss" claim',
    ),
    "missing aud": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(aud=None))),
        'token is invalid: Token is missing the "aud" claim',
    ),
    "sub not a string": (
        lambda k, kid, d: bearer(eddsa(k, kid, claims(sub=42))),
        "token is invalid: Subject must be a string",
    ),
}


@pytest.mark.parametrize("path", CREATE_PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_tokens_that_do_not_verify_are_401_and_write_nothing(
    product_client, tables, signing_key, kid, local_keys, path, case
):
    make_headers, message = CASES[case]
    response = post(product_client, path, make_headers(signing_key, kid, local_keys))
    assert_401(response, message, tables)


@pytest.mark.parametrize("path", CREATE_PATHS)
def test_a_token_user_api_would_issue_is_accepted(product_client, issue_token, path):
    response = post(product_client, path, bearer(issue_token("alice")))
    assert response.status_code == 201, response.body
    assert response.json_body["product"]["created_by"] == "alice"


def test_the_bearer_scheme_is_case_insensitive(product_client, issue_token):
    headers = {"Authorization": f"bearer {issue_token('alice')}"}
    assert post(product_client, "/add_product", headers).status_code == 201


def test_expiry_within_the_clock_skew_allowance_is_accepted(product_client, signing_key, kid):
    now = int(time.time())
    token = eddsa(signing_key, kid, claims(iat=now - 3600, exp=now - 5))
    assert post(product_client, "/add_product", bearer(token)).status_code == 201


def test_the_token_is_checked_before_the_body(product_client, tables):
    """A caller without a token learns nothing about what a valid body looks like."""
    response = product_client.http.post("/add_product", headers=JSON, body="{not json")
    assert_401(response, "Authorization header with a Bearer token is required", tables)
