"""The three services as the tooling sees them: folders, local ports, stage settings, tables.

Everything here is read from the services' own files (``.chalice/config.json`` for a stage's
settings, ``resources.json`` for the table), so the local run, the tests and the deploy all build
from the same definitions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"
KEYS_DIR = LOCAL_DIR / "keys"


def shown(path: Path) -> str:
    """``path`` as a user reads it in a message: relative to the checkout when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


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
        """The service's own ``resources.json`` resources and the tables the event topology
        adds to it (a consumer's processed-events table), one definition for every use."""
        from tools import topology  # it names the services defined below

        own = json.loads((self.directory / "resources.json").read_text())["Resources"]
        return {**topology.generated_tables(self), **own}

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
        from tools import topology

        if logical_id in topology.GENERATED_TABLE_SETTINGS:
            return topology.GENERATED_TABLE_SETTINGS[logical_id]
        for resource in self.resources().values():
            variables = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
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
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if "StreamSpecification" in props:
            # CloudFormation's form has only the view type; the API also wants it switched on.
            args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
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


def add_missing_indexes(dynamodb: Any, args: dict[str, Any]) -> list[str]:
    """Create the declared GSIs an existing table lacks (local data made before an index was
    added to ``resources.json``), one ``UpdateTable`` each as DynamoDB requires; return them as
    ``table.index``. Kept data stays; DynamoDB backfills the index."""
    declared = args.get("GlobalSecondaryIndexes", [])
    if not declared:
        return []
    table = dynamodb.describe_table(TableName=args["TableName"])["Table"]
    present = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
    added = []
    for index in declared:
        if index["IndexName"] in present:
            continue
        create = {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
        dynamodb.update_table(
            TableName=args["TableName"],
            AttributeDefinitions=args["AttributeDefinitions"],
            GlobalSecondaryIndexUpdates=[{"Create": create}],
        )
        added.append(f"{args['TableName']}.{index['IndexName']}")
    if added:
        _wait_for_active_indexes(dynamodb, args["TableName"])
    return added


def add_missing_stream(dynamodb: Any, args: dict[str, Any]) -> list[str]:
    """Switch on the declared stream of an existing table that has none (local data made before
    the table got its stream); return ``table.stream`` when it did."""
    wanted = args.get("StreamSpecification")
    if not wanted:
        return []
    table = dynamodb.describe_table(TableName=args["TableName"])["Table"]
    if table.get("StreamSpecification", {}).get("StreamEnabled"):
        return []
    dynamodb.update_table(TableName=args["TableName"], StreamSpecification=wanted)
    return [f"{args['TableName']}.stream"]


def _wait_for_active_indexes(dynamodb: Any, table: str, timeout: float = 60.0) -> None:
    """A new index answers queries only once ``ACTIVE`` (it backfills first); the services must
    not start before, or their first ``?created_by=`` would fail."""
    deadline = time.monotonic() + timeout
    while True:
        described = dynamodb.describe_table(TableName=table)["Table"]
        indexes = described.get("GlobalSecondaryIndexes", [])
        if all(index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the indexes of {table} did not become ACTIVE in {timeout:g} s")
        time.sleep(0.2)


def create_tables(dynamodb: Any, stage: str) -> list[str]:
    """Create every table of every data service if missing, and every declared index an
    existing table lacks; return what was created (``table`` or ``table.index``)."""
    existing = set(dynamodb.list_tables()["TableNames"])
    created = []
    for svc in DATA_SERVICES:
        for logical_id in svc.tables():
            args = svc.create_table_args(stage, logical_id)
            if args["TableName"] in existing:
                created += add_missing_indexes(dynamodb, args)
                created += add_missing_stream(dynamodb, args)
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
