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

    def resources(self) -> dict[str, Any]:
        return json.loads((self.directory / "resources.json").read_text())["Resources"]

    def tables(self) -> dict[str, dict[str, Any]]:
        """Every ``AWS::DynamoDB::Table`` in ``resources.json``, by logical id."""
        return {
            logical_id: resource
            for logical_id, resource in self.resources().items()
            if resource.get("Type") == "AWS::DynamoDB::Table"
        }

    def table_resource(self, logical_id: str = "Table") -> dict[str, Any]:
        """One table this service declares (``Table``, its main one, unless named)."""
        try:
            return self.tables()[logical_id]
        except KeyError:
            raise ValueError(f"{self.name}/resources.json declares no table {logical_id}") from None

    def table_env(self, logical_id: str) -> str:
        """The environment variable that carries the table's name to the function: the one
        ``resources.json`` wires to it with ``{"Ref": logical_id}``."""
        handler = self.resources().get("APIHandler", {})
        variables = handler.get("Properties", {}).get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            if value == {"Ref": logical_id}:
                return str(name)
        raise ValueError(f"{self.name}/resources.json passes table {logical_id} to no variable")

    def create_table_args(self, stage: str, logical_id: str = "Table") -> dict[str, Any]:
        """``CreateTable`` arguments for ``stage``, built from the CloudFormation definition;
        the name is the stage's value of the table's variable."""
        props = self.table_resource(logical_id)["Properties"]
        args = {
            "TableName": self.stage_env(stage)[self.table_env(logical_id)],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        for optional in ("GlobalSecondaryIndexes", "StreamSpecification"):
            if optional in props:
                args[optional] = props[optional]
        return args

    def time_to_live(self, logical_id: str) -> dict[str, Any] | None:
        """The table's ``TimeToLiveSpecification``, for ``UpdateTimeToLive`` after creation."""
        return self.table_resource(logical_id)["Properties"].get("TimeToLiveSpecification")


GATEWAY = ServiceDef("gateway_api", 5000, "GATEWAY_API_PORT", owns_table=False)
USER = ServiceDef("user_api", 5001, "USER_API_PORT", owns_table=True, url_env="USER_API_URL")
PRODUCT = ServiceDef(
    "product_api", 5002, "PRODUCT_API_PORT", owns_table=True, url_env="PRODUCT_API_URL"
)
SERVICES = (USER, PRODUCT, GATEWAY)  # start order: the gateway's dependencies first
DATA_SERVICES = tuple(s for s in SERVICES if s.owns_table)


def create_tables(dynamodb: Any, stage: str) -> list[str]:
    """Create every table of every data service if missing; return the names created."""
    existing = set(dynamodb.list_tables()["TableNames"])
    created = []
    for svc in DATA_SERVICES:
        for logical_id in svc.tables():
            args = svc.create_table_args(stage, logical_id)
            if args["TableName"] in existing:
                continue
            try:
                dynamodb.create_table(**args)
            except dynamodb.exceptions.ResourceInUseException:
                continue  # made meanwhile by someone else: it exists, which is all we need
            ttl = svc.time_to_live(logical_id)
            if ttl:
                dynamodb.update_time_to_live(
                    TableName=args["TableName"], TimeToLiveSpecification=ttl
                )
            created.append(args["TableName"])
    return created
