"""``GET /health`` is liveness and touches nothing; ``GET /health?ready=1`` is readiness."""

from __future__ import annotations

from typing import Any

import pytest

from svckit import dynamo
from tools import services

TABLE = services.PRODUCT.stage_env("local")["TABLE_NAME"]


@pytest.fixture
def get_item_calls(tables: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    client = dynamo.client()
    real = client.get_item

    def counting(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(client, "get_item", counting)
    return calls


def test_liveness_costs_no_table_call(product_client: Any, get_item_calls: list) -> None:
    response = product_client.http.get("/health")

    assert response.status_code == 200
    assert response.json_body["status"] == "ok"
    assert "checks" not in response.json_body
    assert get_item_calls == []


def test_readiness_reads_the_table_once_and_loads_the_key_set(
    product_client: Any, get_item_calls: list
) -> None:
    response = product_client.http.get("/health?ready=1")

    assert response.status_code == 200
    assert response.json_body["checks"] == {"jwks": "ok", "table": "ok"}
    assert [c["TableName"] for c in get_item_calls] == [TABLE]


def test_a_missing_table_is_not_ready_and_named(product_client: Any, tables: Any) -> None:
    tables.delete_table(TableName=TABLE)

    response = product_client.http.get("/health?ready=1")

    assert response.status_code == 503
    body = response.json_body
    assert body["Code"] == "ServiceUnavailableError"
    assert body["Message"] == "product_api is not ready: table"
    assert body["checks"] == {"jwks": "ok", "table": "failing"}
    assert "ResourceNotFound" not in response.body.decode()
