"""DELETE /users/{username}: who may delete whom, and what a deleted user's tokens can still do.

A name deleted and registered again is a new account (a new ``account_id``, carried in its tokens
as ``acct``): tokens of the old registration act for nobody, in user_api, from then on.
"""

from __future__ import annotations

import jwt
import pytest

from tests.conftest import bearer, post_json
from tools import admin, services

TABLE = services.USER.stage_env("local")["TABLE_NAME"]
CALLER_GONE = {"Code": "UnauthorizedError", "Message": "token is invalid: its user does not exist"}


def _exists(user_client, name):
    return user_client.http.get(f"/users/{name}").status_code == 200


def test_a_user_deletes_themself(register, login, user_client):
    register("alice")
    token = login("alice")
    response = user_client.http.delete("/users/alice", headers=bearer(token))
    assert response.status_code == 204
    assert response.body in (b"", "", None)
    assert user_client.http.get("/users/alice").status_code == 404
    relogin = post_json(
        user_client, "/login", {"username": "alice", "password": "correct-horse-1234"}
    )
    assert relogin.status_code == 401


def test_self_match_ignores_case(register, login, user_client):
    register("Alice")
    token = login("alice")
    response = user_client.http.delete("/users/ALICE", headers=bearer(token))
    assert response.status_code == 204
    assert not _exists(user_client, "alice")


def test_an_admin_deletes_another_user(register, user_client, admin_token):
    register("alice")
    response = user_client.http.delete("/users/alice", headers=bearer(admin_token))
    assert response.status_code == 204
    assert not _exists(user_client, "alice")
    assert _exists(user_client, "boss")


def test_anyone_else_is_refused_and_the_user_stays(register, login, user_client):
    register("alice")
    register("bob")
    response = user_client.http.delete("/users/alice", headers=bearer(login("bob")))
    assert response.status_code == 403
    assert response.json_body == {
        "Code": "ForbiddenError",
        "Message": "only the user or an admin may delete a user",
    }
    assert _exists(user_client, "alice")


def test_a_non_admin_learns_nothing_about_unknown_names(register, login, user_client):
    register("bob")
    response = user_client.http.delete("/users/ghost", headers=bearer(login("bob")))
    assert response.status_code == 403


@pytest.mark.parametrize("name", ["ghost", "x", "bad name!"])
def test_unknown_user_is_404(user_client, admin_token, name):
    response = user_client.http.delete(f"/users/{name}", headers=bearer(admin_token))
    assert response.status_code == 404
    assert response.json_body["Code"] == "NotFoundError"


def test_deleting_twice_is_a_404_the_second_time(register, user_client, admin_token):
    register("alice")
    assert user_client.http.delete("/users/alice", headers=bearer(admin_token)).status_code == 204
    assert user_client.http.delete("/users/alice", headers=bearer(admin_token)).status_code == 404


def test_delete_needs_a_token(register, user_client):
    register("alice")
    assert user_client.http.delete("/users/alice").status_code == 401
    bad = user_client.http.delete("/users/alice", headers=bearer("not.a.token"))
    assert bad.status_code == 401
    assert _exists(user_client, "alice")


def test_a_token_whose_user_has_no_row_deletes_nobody(register, user_client, issue_token):
    register("alice")
    ghost = bearer(issue_token("ghost", ["admin"]))
    response = user_client.http.delete("/users/alice", headers=ghost)
    assert (response.status_code, response.json_body) == (401, CALLER_GONE)
    assert _exists(user_client, "alice")


def test_a_deleted_user_old_token_acts_for_nobody(register, login, user_client, tables):
    register("alice")
    register("carol")
    assert admin.grant_role(tables, TABLE, "alice", "admin")
    token = bearer(login("alice"))  # an admin's token, then the admin is deleted
    assert user_client.http.delete("/users/alice", headers=token).status_code == 204
    promoted = user_client.http.put("/user/promote/carol", headers=token)
    assert (promoted.status_code, promoted.json_body) == (401, CALLER_GONE)
    own = user_client.http.put("/user/promote/alice", headers=token)
    assert (own.status_code, own.json_body) == (401, CALLER_GONE)
    granted = post_json(user_client, "/users/carol/points", {"points": 5}, token)
    assert (granted.status_code, granted.json_body) == (401, CALLER_GONE)
    deleted = user_client.http.delete("/users/carol", headers=token)
    assert (deleted.status_code, deleted.json_body) == (401, CALLER_GONE)
    assert _exists(user_client, "carol")


def test_a_name_registered_again_is_a_new_account(register, login, user_client, tables):
    register("alice", email="old@example.com")
    old = bearer(login("alice"))
    assert user_client.http.delete("/users/alice", headers=old).status_code == 204
    assert register("Alice", "another-password-1", email="new@example.com").status_code == 201
    new = bearer(login("alice", "another-password-1"))

    promoted = user_client.http.put("/user/promote/alice", headers=old)
    assert (promoted.status_code, promoted.json_body) == (401, CALLER_GONE)
    deleted = user_client.http.delete("/users/alice", headers=old)
    assert (deleted.status_code, deleted.json_body) == (401, CALLER_GONE)
    seen_by_old = user_client.http.get("/users/alice", headers=old)
    assert seen_by_old.status_code == 200
    assert "email" not in seen_by_old.json_body  # the new account's email is not the old one's

    # An old admin token is no admin of the new account either.
    assert admin.grant_role(tables, TABLE, "alice", "admin")
    register("carol")
    granted = post_json(user_client, "/users/carol/points", {"points": 5}, old)
    assert (granted.status_code, granted.json_body) == (401, CALLER_GONE)

    assert user_client.http.get("/users/alice", headers=new).json_body["email"] == (
        "new@example.com"
    )
    assert user_client.http.put("/user/promote/alice", headers=new).status_code == 200
    assert user_client.http.delete("/users/alice", headers=new).status_code == 204
    assert not _exists(user_client, "alice")


def test_tokens_carry_the_account_of_the_registration(register, login, user_client, tables):
    register("alice")
    claims = jwt.decode(login("alice"), options={"verify_signature": False})
    row = tables.get_item(TableName=TABLE, Key={"username_key": {"S": "alice"}})["Item"]
    assert claims["acct"] == row["account_id"]["S"]
    assert "account_id" not in user_client.http.get("/users/alice").json_body


def test_a_row_from_before_account_ids_still_works_with_a_token_without_the_claim(
    register, login, user_client, tables
):
    register("alice")
    tables.update_item(
        TableName=TABLE,
        Key={"username_key": {"S": "alice"}},
        UpdateExpression="REMOVE account_id",
    )
    token = login("alice")
    assert "acct" not in jwt.decode(token, options={"verify_signature": False})
    assert user_client.http.put("/user/promote/alice", headers=bearer(token)).status_code == 200
    assert user_client.http.delete("/users/alice", headers=bearer(token)).status_code == 204


# --- the optional ``acct`` claim in svckit.tokens (other services ignore it) ------------------


def test_the_account_claim_round_trips_and_is_optional():
    from svckit import keys
    from svckit.tokens import TokenIssuer, TokenVerifier

    private_pem, jwks = keys.new_key_material()
    issuer, verifier = TokenIssuer(private_pem, 60), TokenVerifier(jwks)
    assert verifier.verify(issuer.issue("alice", (), "a1b2")).account == "a1b2"
    assert verifier.verify(issuer.issue("alice")).account is None
    assert "acct" not in jwt.decode(issuer.issue("alice"), options={"verify_signature": False})


def test_a_non_string_account_claim_is_refused():
    from chalice import UnauthorizedError

    from svckit import keys
    from svckit.tokens import TokenVerifier
    from tests.support.tokens import claims, eddsa, kid_of

    private_pem, jwks = keys.new_key_material()
    key = keys.load_private_key(private_pem)
    token = eddsa(key, kid_of(key), claims(acct=["a1b2"]))
    with pytest.raises(UnauthorizedError, match="malformed claims"):
        TokenVerifier(jwks).verify(token)


def _replace_registration_before_the_delete(name: str, tables) -> list[str]:
    """Between the delete's check of the caller and its DeleteItem, the name's account is
    deleted and the name registered again (another account): what a token of the first account
    then deletes is the question. Returns the new account's id once the swap has run."""
    from svckit import dynamo

    swapped: list[str] = []

    def swap(params, **_):
        if swapped or params.get("TableName") != TABLE:
            return
        key = {"username_key": {"S": name}}
        row = tables.get_item(TableName=TABLE, Key=key)["Item"]
        tables.delete_item(TableName=TABLE, Key=key)
        tables.put_item(TableName=TABLE, Item={**row, "account_id": {"S": "a-later-account"}})
        swapped.append("a-later-account")

    dynamo.client().meta.events.register("before-parameter-build.dynamodb.DeleteItem", swap)
    return swapped


def test_a_deleted_accounts_token_cannot_delete_the_next_registration_of_its_name(
    register, login, user_client, tables
):
    register("alice")
    token = login("alice")
    swapped = _replace_registration_before_the_delete("alice", tables)
    response = user_client.http.delete("/users/alice", headers=bearer(token))
    assert swapped
    assert response.status_code == 401, response.body
    assert response.json_body == CALLER_GONE
    row = tables.get_item(TableName=TABLE, Key={"username_key": {"S": "alice"}})["Item"]
    assert row["account_id"] == {"S": "a-later-account"}
