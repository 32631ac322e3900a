"""An existing stage updates in place: the synthesized stacks keep the logical ids, key schemas
and resource names of the templates ``tools.package`` makes today (what ``make deploy`` sent).

A table under a new logical id would be replaced, and its ``DeletionPolicy: Delete`` drops its
data; a named queue, rule, function or log group under a new id would be created before the old
one is deleted, and the name clash fails the update.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools import eventstack, package
from tools.services import SERVICES

pytestmark = pytest.mark.deploy

STAGE = "dev"
SERVICE_NAMES = [s.name for s in SERVICES]
BY_NAME = {s.name: s for s in SERVICES}
# The property that names each kind of resource (the ones whose names are fixed).
NAME_PROPERTY = {
    "AWS::Serverless::Function": "FunctionName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Events::Rule": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Serverless::Api": "Name",
}


@pytest.fixture(scope="session")
def todays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Today's templates: what tools.package writes for the stage (tests/deploy/conftest.py)."""
    out: Path = tmp_path_factory.mktemp("tools-package") / STAGE
    built = {p.service.name: p.template() for p in package.package_all(STAGE, out)}
    built["events"] = eventstack.bus_template(STAGE)
    return built


def _resolved_name(value: Any, stack: str) -> Any:
    """Today's name expressions (``Ref``/``Fn::Sub`` of ``AWS::StackName``) as CloudFormation
    resolves them in ``stack``."""
    if value == {"Ref": "AWS::StackName"}:
        return stack
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        text = value["Fn::Sub"]
        if "${AWS::StackName}" in text:
            return text.replace("${AWS::StackName}", stack)
    return value


def _tables(resources: dict[str, Any]) -> dict[str, Any]:
    """Each table's definition, without the tags the CDK app adds to every resource."""
    return {
        logical_id: {
            **{k: v for k, v in resource.items() if k != "Properties"},
            "Properties": {k: v for k, v in resource["Properties"].items() if k != "Tags"},
        }
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_tables_keep_logical_ids_key_schemas_and_policies(todays, templates, name) -> None:
    ours = _tables(templates[name].to_json()["Resources"])
    assert ours == _tables(todays[name]["Resources"])


@pytest.mark.parametrize("name", [*SERVICE_NAMES, "events"])
def test_every_resource_of_today_keeps_its_logical_id_and_type(todays, templates, name) -> None:
    ours = {k: v["Type"] for k, v in templates[name].to_json()["Resources"].items()}
    theirs = {k: v["Type"] for k, v in todays[name]["Resources"].items()}
    assert {k: ours.get(k) for k in theirs} == theirs


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_named_resources_keep_their_names(todays, templates, name) -> None:
    stack = eventstack.service_stack_name(BY_NAME[name], STAGE)
    ours = templates[name].to_json()["Resources"]
    for logical_id, resource in todays[name]["Resources"].items():
        prop = NAME_PROPERTY.get(resource["Type"])
        if prop is None:
            continue
        theirs = _resolved_name(resource["Properties"][prop], stack)
        assert ours[logical_id]["Properties"][prop] == theirs, logical_id


def test_bus_keeps_its_name_and_archive(todays, templates) -> None:
    ours = templates["events"].to_json()["Resources"]
    for logical_id, resource in todays["events"]["Resources"].items():
        for prop in ("Name", "ArchiveName", "RetentionDays", "EventPattern"):
            if prop in resource["Properties"]:
                assert ours[logical_id]["Properties"][prop] == resource["Properties"][prop]
