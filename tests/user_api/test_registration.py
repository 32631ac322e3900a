"""Registration on every alias: what is stored, what is answered, and every way it can fail."""

from __future__ import annotations

import json

import pytest

from tests.conftest import JSON, post_json
from tools import services

TABLE = services.USER.stage_env("local")["TABLE_NAME"]


def stored(tables, username: str) -> dict:
    item = tables.get_item(TableName=TABLE, Key={"username_key": {"S": username.lower()}})
    return item.get("Item", {})


@pytest.mark.parametrize("path", ["/register", "/users", "/user"])
def test_every_alias_registers_and_answers_the_public_view(user_client, tables, path):
    response = post_json(
        user_client,
        path,
        {"username": "john_doe", "password": "correct-horse-1234", "email": "john@example.com"},
    )
    assert response.status_code == 201
    body = response.json_body
    assert body["message"] == "User registered successfully"
    user = body["user"]
    assert set(user) == {"username", "points", "status", "created_at", "email"}
    assert user["username"] == "john_doe"
    assert user["points"] == 0
    assert user["status"] == "Bronze"
    assert user["email"] == "john@example.com"
    assert user["created_at"].endswith("Z")
    assert b"argon2" not in response.body
    assert b"correct-horse" not in response.body
    assert stored(tables, "john_doe")["username"]["S"] == "john_doe"


def test_password_is_stored_only_as_an_argon2id_hash_at_owasp_parameters(register, tables):
    assert register().status_code == 201
    item = stored(tables, "john_doe")
    stored_hash = item["password_hash"]["S"]
    assert stored_hash.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in stored_hash
    assert "correct-horse-1234" not in json.dumps(item)


def test_names_are_unique_without_regard_to_case_and_the_first_owner_is_kept(
    register, tables, login
):
    assert register("John_Doe", "first-password-1").status_code == 201
    clash = register("jOHN_dOE", "second-password-2")
    assert clash.status_code == 409
    assert clash.json_body == {"Code": "ConflictError", "Message": "username is already taken"}
    assert stored(tables, "john_doe")["username"]["S"] == "John_Doe"
    assert login("john_doe", "first-password-1")  # the original password still works


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"password": "correct-horse-1234"}, "username is required"),
        ({"username": "john_doe"}, "password is required"),
        (
            {"username": "jo", "password": "correct-horse-1234"},
            "username must be 3-32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            {"username": "j" * 33, "password": "correct-horse-1234"},
            "username must be 3-32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            {"username": "john doe", "password": "correct-horse-1234"},
            "username must be 3-32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            {"username": "jöhn", "password": "correct-horse-1234"},
            "username must be 3-32 characters of A-Z a-z 0-9 _ . -",
        ),
        ({"username": 12345, "password": "correct-horse-1234"}, "username must be a string"),
        ({"username": "john_doe", "password": "1234"}, "password must be at least 8 characters"),
        (
            {"username": "john_doe", "password": "p" * 129},
            "password must be at most 128 characters",
        ),
        ({"username": "john_doe", "password": ["x"] * 9}, "password must be a string"),
        (
            {"username": "john_doe", "password": "correct-horse-1234", "email": "not-an-email"},
            "email must be a valid email address",
        ),
        (
            {"username": "john_doe", "password": "correct-horse-1234", "email": "a@b"},
            "email must be a valid email address",
        ),
        (
            {"username": "john_doe", "password": "correct-horse-1234", "email": 7},
            "email must be a string",
        ),
        (
            {"username": "john_doe", "password": "correct-horse-1234", "points": 500},
            "points is not a known field",
        ),
    ],
)
def test_invalid_registrations_name_the_field_and_rule_and_store_nothing(
    user_client, tables, body, message
):
    response = post_json(user_client, "/register", body)
    assert response.status_code == 400
    assert response.json_body == {"Code": "BadRequestError", "Message": message}
    assert tables.scan(TableName=TABLE)["Count"] == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "request body is not valid JSON"),
        ('{"username": NaN}', "request body is not valid JSON"),
        ("[1, 2]", "request body must be a JSON object"),
        ('"john"', "request body must be a JSON object"),
        ("", "request body must be a JSON object"),
    ],
)
def test_malformed_bodies_are_400_not_500(user_client, raw, message):
    response = user_client.http.post("/register", headers=JSON, body=raw)
    assert response.status_code == 400
    assert response.json_body == {"Code": "BadRequestError", "Message": message}


def test_body_over_64_kib_is_413_and_stores_nothing(user_client, tables):
    body = json.dumps({"username": "john_doe", "password": "p" * (64 * 1024)})
    response = user_client.http.post("/register", headers=JSON, body=body)
    assert response.status_code == 413
    assert response.json_body["Code"] == "PayloadTooLargeError"
    assert response.json_body["Message"] == "request body must be at most 65536 bytes"
    assert tables.scan(TableName=TABLE)["Count"] == 0


def test_non_json_content_type_is_refused(user_client):
    response = user_client.http.post("/register", headers={"Content-Type": "text/plain"}, body="hi")
    assert response.status_code == 415


def test_request_id_is_echoed_when_safe_and_made_when_absent_or_unsafe(user_client):
    echoed = user_client.http.get("/health", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["X-Request-Id"] == "abc-123"
    made = user_client.http.get("/health")
    assert len(made.headers["X-Request-Id"]) == 32
    unsafe = user_client.http.get("/health", headers={"X-Request-Id": "evil\r\nSet-Cookie: x"})
    assert unsafe.headers["X-Request-Id"] != "evil\r\nSet-Cookie: x"
    assert len(unsafe.headers["X-Request-Id"]) == 32


def test_health(user_client):
    response = user_client.http.get("/health")
    assert response.status_code == 200
    assert response.json_body["status"] == "ok"
    assert response.json_body["service"] == "user_api"
