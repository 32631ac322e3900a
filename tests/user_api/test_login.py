"""Login: tokens that verify with the public key only, and failures that reveal nothing."""

from __future__ import annotations

import json
import logging

import jwt
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from svckit import dynamo, keys
from svckit.tokens import AUDIENCE, ISSUER
from tests.conftest import post_json
from tests.support.apps import load_app
from tools import services

TABLE = services.USER.stage_env("local")["TABLE_NAME"]


def test_login_issues_an_eddsa_token_verifiable_with_the_public_jwks(
    register, user_client, local_keys
):
    register()
    response = post_json(
        user_client, "/login", {"username": "john_doe", "password": "correct-horse-1234"}
    )
    assert response.status_code == 200
    body = response.json_body
    assert body["message"] == "Login successful"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    token = body["access_token"]

    header = jwt.get_unverified_header(token)
    jwks = jwt.PyJWKSet.from_json((local_keys / keys.JWKS_FILE).read_text())
    assert header["alg"] == "EdDSA"
    assert header["kid"] == jwks.keys[0].key_id
    claims = jwt.decode(
        token, jwks[header["kid"]].key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
    )
    assert claims["sub"] == "john_doe"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["roles"] == []


def test_login_is_case_insensitive_and_the_token_names_the_registered_spelling(
    register, user_client
):
    register("John_Doe")
    response = post_json(
        user_client, "/login", {"username": "JOHN_DOE", "password": "correct-horse-1234"}
    )
    assert response.status_code == 200
    assert (
        jwt.decode(response.json_body["access_token"], options={"verify_signature": False})["sub"]
        == "John_Doe"
    )


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "john_doe", "password": "wrong-password-99"},
        {"username": "nobody_here", "password": "correct-horse-1234"},
        {"username": "x", "password": "y"},  # breaks the registration rules: cannot exist
    ],
)
def test_wrong_password_and_unknown_name_get_the_same_401(register, user_client, credentials):
    register()
    response = post_json(user_client, "/login", credentials)
    assert response.status_code == 401
    assert response.json_body == {
        "Code": "UnauthorizedError",
        "Message": "Invalid username or password",
    }


def test_unknown_name_costs_the_same_argon2_work_as_a_wrong_password(
    register, user_client, monkeypatch
):
    """The decoy hash is verified for unknown names, so timing does not reveal which names exist."""
    register()
    passwords = load_app(services.USER).passwords
    calls = []
    real_verify = passwords.PasswordHasher.verify

    def counting_verify(self, hash_, password):
        calls.append(hash_)
        return real_verify(self, hash_, password)

    monkeypatch.setattr(passwords.PasswordHasher, "verify", counting_verify)
    post_json(user_client, "/login", {"username": "john_doe", "password": "wrong-password-99"})
    post_json(user_client, "/login", {"username": "nobody_here", "password": "wrong-password-99"})
    assert len(calls) == 2
    assert all(h.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for h in calls)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"username": "john_doe"}, "password is required"),
        ({"password": "x"}, "username is required"),
        ({"username": 1, "password": "correct-horse-1234"}, "username must be a string"),
    ],
)
def test_malformed_login_is_400(user_client, body, message):
    response = post_json(user_client, "/login", body)
    assert response.status_code == 400
    assert response.json_body == {"Code": "BadRequestError", "Message": message}


def test_login_rehashes_when_the_stage_raises_the_parameters(
    register, user_client, tables, monkeypatch
):
    register()

    def stored_hash() -> str:
        return tables.get_item(TableName=TABLE, Key={"username_key": {"S": "john_doe"}})["Item"][
            "password_hash"
        ]["S"]

    before = stored_hash()
    monkeypatch.setenv("ARGON2_TIME_COST", "3")
    credentials = {"username": "john_doe", "password": "correct-horse-1234"}
    assert post_json(user_client, "/login", credentials).status_code == 200
    after = stored_hash()
    assert after != before
    assert "t=3" in after
    assert post_json(user_client, "/login", credentials).status_code == 200
    assert stored_hash() == after  # up to date now: no further rewrite


def test_parameters_below_owasp_are_refused(monkeypatch):
    passwords = load_app(services.USER).passwords
    monkeypatch.setenv("ARGON2_MEMORY_KIB", "4096")
    with pytest.raises(passwords.config.ConfigError):
        passwords.hash_password("correct-horse-1234")


def test_the_body_never_carries_the_hash_or_password(register, user_client):
    register()
    response = post_json(
        user_client, "/login", {"username": "john_doe", "password": "correct-horse-1234"}
    )
    text = json.dumps(response.json_body)
    assert "argon2" not in text
    assert "correct-horse" not in text


def _throttled() -> Exception:
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        "UpdateItem",
    )


def _failed() -> Exception:
    return ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "UpdateItem")


def _timed_out() -> Exception:
    return ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")


@pytest.mark.parametrize("failure", [_throttled, _failed, _timed_out])
def test_a_failed_rehash_write_does_not_fail_a_correct_login(
    register, user_client, tables, monkeypatch, caplog, failure
):
    """The rehash is an optimisation: its write failing is logged (without the password or a
    hash) and the login with the right password still succeeds, keeping the old hash."""
    register()
    key = {"username_key": {"S": "john_doe"}}
    before = tables.get_item(TableName=TABLE, Key=key)["Item"]["password_hash"]["S"]
    monkeypatch.setenv("ARGON2_TIME_COST", "3")  # the stored hash is now behind: rehash due
    client = dynamo.client()
    writes = []

    def failing_update_item(**kwargs):
        writes.append(kwargs)
        raise failure()

    monkeypatch.setattr(client, "update_item", failing_update_item)
    caplog.set_level(logging.INFO)
    response = post_json(
        user_client, "/login", {"username": "john_doe", "password": "correct-horse-1234"}
    )
    assert response.status_code == 200, response.json_body
    assert response.json_body["access_token"]
    assert len(writes) == 1  # the rehash was attempted
    monkeypatch.undo()
    assert tables.get_item(TableName=TABLE, Key=key)["Item"]["password_hash"]["S"] == before

    warnings = [r for r in caplog.records if "rehash" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]
    logged = json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert "correct-horse" not in logged
    assert "$argon2" not in logged


def test_a_token_issued_in_one_stage_is_refused_with_401_in_another(
    register, login, user_client, monkeypatch
):
    """Even when two stages share the key (a stage copied from another once did), the token
    names its stage in iss and aud, and another stage refuses it."""
    register("alice", email="alice@example.com")
    monkeypatch.setenv("STAGE", "dev")
    token = {"Authorization": f"Bearer {login('alice')}"}
    own = user_client.http.get("/users/alice", headers=token)
    assert own.status_code == 200
    assert own.json_body["email"] == "alice@example.com"
    monkeypatch.setenv("STAGE", "prod")
    for response in (
        user_client.http.get("/users/alice", headers=token),
        user_client.http.put("/user/promote/alice", headers=token),
    ):
        assert response.status_code == 401
        assert response.json_body["Code"] == "UnauthorizedError"
        assert response.json_body["Message"].startswith("token is invalid")
