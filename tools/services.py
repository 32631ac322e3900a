"""The three services as the tooling sees them: folders, local ports, stage settings, tables.

Everything here is read from the services' own files (``.chalice/config.json`` for a stage's
settings, ``resources.json`` for the table), so the local run, the tests and the deploy all build
from the same definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"
KEYS_DIR = LOCAL_DIR / "keys"


@dataclass(frozen=True)
class ServiceDef:
    name: str
    port: int  # the local port of API.md
    port_env: str  # environment variable that moves it
    owns_table: bool
    url_env: str | None = None  # the gateway's setting that holds this service's base URL

    @property
    def directory(self) -> Path:
        return ROOT / self.name

    def config(self) -> dict[str, Any]:
        return json.loads((self.directory / ".chalice" / "config.json").read_text())

    def stage_env(self, stage: str) -> dict[str, str]:
        """The environment Chalice gives the function in ``stage`` (global, then stage)."""
        cfg = self.config()
        env = dict(cfg.get("environment_variables", {}))
        env.update(cfg["stages"][stage].get("environment_variables", {}))
        return env

    def table_resource(self) -> dict[str, Any]:
        """The ``AWS::DynamoDB::Table`` this service declares in its ``resources.json``."""
        template = json.loads((self.directory / "resources.json").read_text())
        tables = [
            r for r in template["Resources"].values() if r.get("Type") == "AWS::DynamoDB::Table"
        ]
        if len(tables) != 1:
            raise ValueError(f"{self.name}/resources.json must declare exactly one table")
        return tables[0]

    def create_table_args(self, stage: str) -> dict[str, Any]:
        """``CreateTable`` arguments for ``stage``, built from the CloudFormation definition."""
        props = self.table_resource()["Properties"]
        args = {
            "TableName": self.stage_env(stage)["TABLE_NAME"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        return args


GATEWAY = ServiceDef("gateway_api", 5000, "GATEWAY_API_PORT", owns_table=False)
USER = ServiceDef("user_api", 5001, "USER_API_PORT", owns_table=True, url_env="USER_API_URL")
PRODUCT = ServiceDef(
    "product_api", 5002, "PRODUCT_API_PORT", owns_table=True, url_env="PRODUCT_API_URL"
)
SERVICES = (USER, PRODUCT, GATEWAY)  # start order: the gateway's dependencies first
DATA_SERVICES = tuple(s for s in SERVICES if s.owns_table)


def create_tables(dynamodb: Any, stage: str) -> list[str]:
    """Create each data service's table if missing; return the names created."""
    existing = set(dynamodb.list_tables()["TableNames"])
    created = []
    for svc in DATA_SERVICES:
        args = svc.create_table_args(stage)
        if args["TableName"] not in existing:
            dynamodb.create_table(**args)
            created.append(args["TableName"])
    return created
