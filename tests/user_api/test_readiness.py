"""user_api's readiness: its users table answers a read and its signing key loads."""

from __future__ import annotations

from typing import Any

from tools import services

TABLE = services.USER.stage_env("local")["TABLE_NAME"]


def test_readiness_checks_the_table_and_both_keys(user_client: Any) -> None:
    response = user_client.http.get("/health?ready=1")

    assert response.status_code == 200
    assert response.json_body["checks"] == {"jwks": "ok", "table": "ok", "signing_key": "ok"}


def test_liveness_stays_ok_while_readiness_fails(user_client: Any, tables: Any) -> None:
    tables.delete_table(TableName=TABLE)

    assert user_client.http.get("/health").status_code == 200
    response = user_client.http.get("/health?ready=1")
    assert response.status_code == 503
    assert response.json_body["Message"] == "user_api is not ready: table"
