"""Reading users, promotion and points: who may see and change what."""

from __future__ import annotations

import pytest

from tests.conftest import bearer, post_json
from tests.support.apps import load_app
from tools import admin, services

TABLE = services.USER.stage_env("local")["TABLE_NAME"]


def test_list_shows_only_the_public_view(register, user_client):
    register("alice", email="alice@example.com")
    register("bob", email="bob@example.com")
    response = user_client.http.get("/users")
    assert response.status_code == 200
    assert sorted(u["username"] for u in response.json_body) == ["alice", "bob"]
    for user in response.json_body:
        assert set(user) == {"username", "points", "status", "created_at"}


def test_list_pages_with_cursor_until_done_without_repeats(register, user_client):
    names = [f"user_{i}" for i in range(7)]
    for name in names:
        register(name)
    seen, cursor, pages = [], None, 0
    while True:
        path = "/users?limit=3" + (f"&cursor={cursor}" if cursor else "")
        response = user_client.http.get(path)
        assert response.status_code == 200
        assert len(response.json_body) <= 3
        seen += [u["username"] for u in response.json_body]
        pages += 1
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            assert "Link" not in response.headers
            break
        assert response.headers["Link"] == f'<?cursor={cursor}&limit=3>; rel="next"'
    assert sorted(seen) == names
    assert pages >= 3


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=abc", "limit=-1"])
def test_bad_limit_is_400(user_client, query):
    response = user_client.http.get(f"/users?{query}")
    assert response.status_code == 400
    assert response.json_body == {
        "Code": "BadRequestError",
        "Message": "limit must be an integer between 1 and 1000",
    }


@pytest.mark.parametrize("cursor", ["garbage!", "eyJ4IjoxfQ", "W10", "eyJ1c2VybmFtZV9rZXkiOjF9"])
def test_forged_or_broken_cursor_is_400(user_client, cursor):
    response = user_client.http.get(f"/users?cursor={cursor}")
    assert response.status_code == 400
    assert response.json_body["Message"].startswith("cursor is invalid")


@pytest.mark.parametrize("path", ["/users/{}", "/user/{}"])
def test_get_user_hides_email_from_others_and_shows_it_to_the_owner(
    register, login, user_client, path
):
    register("alice", email="alice@example.com")
    register("bob", email="bob@example.com")
    anonymous = user_client.http.get(path.format("alice"))
    assert anonymous.status_code == 200
    assert "email" not in anonymous.json_body
    as_bob = user_client.http.get(path.format("alice"), headers=bearer(login("bob")))
    assert "email" not in as_bob.json_body
    as_alice = user_client.http.get(path.format("ALICE"), headers=bearer(login("alice")))
    assert as_alice.json_body["email"] == "alice@example.com"
    assert "password_hash" not in as_alice.json_body


@pytest.mark.parametrize("name", ["nobody", "x", "bad name!"])
def test_unknown_or_impossible_user_is_404(user_client, tables, name):
    response = user_client.http.get(f"/users/{name}")
    assert response.status_code == 404
    assert response.json_body["Code"] == "NotFoundError"


def test_a_bad_token_on_an_optional_auth_route_is_401_not_ignored(register, user_client):
    register("alice")
    response = user_client.http.get("/users/alice", headers=bearer("not.a.token"))
    assert response.status_code == 401


def test_promote_needs_a_token(register, user_client):
    register("alice")
    response = user_client.http.put("/user/promote/alice")
    assert response.status_code == 401
    assert response.json_body == {
        "Code": "UnauthorizedError",
        "Message": "Authorization header with a Bearer token is required",
    }


def test_only_the_user_or_an_admin_may_promote(register, login, user_client, admin_token):
    register("alice")
    register("bob")
    forbidden = user_client.http.put("/user/promote/alice", headers=bearer(login("bob")))
    assert forbidden.status_code == 403
    assert (
        user_client.http.put("/user/promote/alice", headers=bearer(login("alice"))).status_code
        == 200
    )
    assert (
        user_client.http.put("/user/promote/alice", headers=bearer(admin_token)).status_code == 200
    )


def test_promote_unknown_user_is_404(user_client, admin_token):
    assert (
        user_client.http.put("/user/promote/ghost", headers=bearer(admin_token)).status_code == 404
    )


@pytest.mark.parametrize(
    ("points", "status"), [(50, "Bronze"), (51, "Silver"), (100, "Silver"), (101, "Gold")]
)
def test_promotion_follows_points(register, login, user_client, admin_token, points, status):
    register("alice")
    granted = post_json(user_client, "/users/alice/points", {"points": points}, bearer(admin_token))
    assert granted.status_code == 200
    assert granted.json_body["points"] == points
    assert granted.json_body["status"] == "Bronze"  # status changes on promotion, as in seed 003
    promoted = user_client.http.put("/user/promote/alice", headers=bearer(login("alice")))
    assert promoted.status_code == 200
    assert promoted.json_body["status"] == status
    assert user_client.http.get("/users/alice").json_body["status"] == status


def test_points_add_up_atomically(register, user_client, admin_token):
    register("alice")
    for _ in range(3):
        post_json(user_client, "/users/alice/points", {"points": 20}, bearer(admin_token))
    assert user_client.http.get("/users/alice").json_body["points"] == 60


def test_a_user_may_not_raise_their_own_points(register, login, user_client, admin_token):
    register("alice")
    own = post_json(user_client, "/users/alice/points", {"points": 10}, bearer(login("alice")))
    assert own.status_code == 403
    admin_self = post_json(user_client, "/users/boss/points", {"points": 10}, bearer(admin_token))
    assert admin_self.status_code == 403
    assert admin_self.json_body["Message"] == "a user may not grant points to themselves"
    assert user_client.http.get("/users/boss").json_body["points"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"points": 0}, "points must be between 1 and 1000"),
        ({"points": 1001}, "points must be between 1 and 1000"),
        ({"points": "5"}, "points must be an integer"),
        ({"points": True}, "points must be an integer"),
        ({"points": 1.5}, "points must be an integer"),
        ({}, "points is required"),
    ],
)
def test_bad_points_are_400(register, user_client, admin_token, body, message):
    register("alice")
    response = post_json(user_client, "/users/alice/points", body, bearer(admin_token))
    assert response.status_code == 400
    assert response.json_body["Message"] == message


def test_points_for_unknown_user_is_404(user_client, admin_token):
    response = post_json(user_client, "/users/ghost/points", {"points": 5}, bearer(admin_token))
    assert response.status_code == 404


def test_status_rule_matches_seed_003():
    users = load_app(services.USER).users
    assert [users.status_for(p) for p in (0, 50, 51, 100, 101)] == [
        "Bronze",
        "Bronze",
        "Silver",
        "Silver",
        "Gold",
    ]


# --- rights come from the table at each request, not from the token (issue 7, item 6) --------


def _revoke_admin(tables, username):
    tables.update_item(
        TableName=TABLE,
        Key={"username_key": {"S": username.lower()}},
        UpdateExpression="DELETE #r :r",
        ExpressionAttributeNames={"#r": "roles"},
        ExpressionAttributeValues={":r": {"SS": ["admin"]}},
    )


def test_a_token_whose_admin_role_was_removed_grants_no_points(
    register, user_client, tables, admin_token
):
    register("alice")
    _revoke_admin(tables, "boss")  # the token still says admin for the rest of its lifetime
    response = post_json(user_client, "/users/alice/points", {"points": 5}, bearer(admin_token))
    assert response.status_code == 403
    assert response.json_body == {
        "Code": "ForbiddenError",
        "Message": "only an admin may grant points",
    }
    assert user_client.http.get("/users/alice").json_body["points"] == 0


def test_a_token_whose_admin_role_was_removed_promotes_nobody_else(
    register, user_client, tables, admin_token
):
    register("alice")
    _revoke_admin(tables, "boss")
    response = user_client.http.put("/user/promote/alice", headers=bearer(admin_token))
    assert response.status_code == 403
    assert response.json_body["Message"] == "only the user or an admin may promote a user"


def test_a_token_for_a_user_who_does_not_exist_cannot_grant_or_promote(
    register, user_client, issue_token
):
    """A validly signed token whose subject has no row (never registered, or since removed)
    acts for nobody, whatever roles it claims."""
    register("alice")
    ghost = bearer(issue_token("ghost", ["admin"]))
    expected = {"Code": "UnauthorizedError", "Message": "token is invalid: its user does not exist"}
    granted = post_json(user_client, "/users/alice/points", {"points": 5}, ghost)
    assert (granted.status_code, granted.json_body) == (401, expected)
    promoted = user_client.http.put("/user/promote/alice", headers=ghost)
    assert (promoted.status_code, promoted.json_body) == (401, expected)
    own = user_client.http.put("/user/promote/ghost", headers=ghost)
    assert (own.status_code, own.json_body) == (401, expected)
    assert user_client.http.get("/users/alice").json_body["points"] == 0


def test_an_admin_role_granted_in_the_table_applies_without_a_new_login(
    register, login, user_client, tables
):
    register("alice")
    register("boss", "boss-password-1")
    token = login("boss", "boss-password-1")  # issued before the grant: no admin role in it
    assert admin.grant_role(tables, TABLE, "boss", "admin")
    response = post_json(user_client, "/users/alice/points", {"points": 5}, bearer(token))
    assert response.status_code == 200
    assert response.json_body["points"] == 5
