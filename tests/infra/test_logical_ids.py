"""An existing stage updates in place: the synthesized stacks keep the logical ids, key schemas
and resource names of the templates ``make deploy`` sent before CDK (frozen, for stage dev, in
``todays_templates.json``: see its ``_source``).

A table under a new logical id would be replaced, and its ``DeletionPolicy: Delete`` drops its
data; a named queue, rule, function or log group under a new id would be created before the old
one is deleted, and the name clash fails the update.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.services import SERVICES

pytestmark = pytest.mark.deploy

TODAYS = json.loads((Path(__file__).parent / "todays_templates.json").read_text())
SERVICE_NAMES = [s.name for s in SERVICES]
# The property that names each kind of resource (the ones whose names are fixed).
NAME_PROPERTY = {
    "AWS::Serverless::Function": "FunctionName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Events::Rule": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Serverless::Api": "Name",
}


def _resources(templates: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(templates[name].to_json()["Resources"])


def test_the_frozen_templates_cover_every_stack_but_observability() -> None:
    assert set(TODAYS) - {"_source"} == {*SERVICE_NAMES, "events"}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_tables_keep_logical_ids_key_schemas_and_policies(templates, name) -> None:
    """Today's tables, each as it was (a table added since is new, not replaced)."""
    resources = _resources(templates, name)
    ours = {
        logical_id: {
            **{k: v for k, v in resources[logical_id].items() if k != "Properties"},
            # Without the tags the CDK app adds to every resource.
            "Properties": {
                k: v for k, v in resources[logical_id]["Properties"].items() if k != "Tags"
            },
        }
        for logical_id in TODAYS[name]["tables"]
        if logical_id in resources
    }
    assert ours == TODAYS[name]["tables"]


@pytest.mark.parametrize("name", [*SERVICE_NAMES, "events"])
def test_every_resource_of_today_keeps_its_logical_id_and_type(templates, name) -> None:
    ours = {k: v["Type"] for k, v in _resources(templates, name).items()}
    theirs = TODAYS[name]["types"]
    assert {k: ours.get(k) for k in theirs} == theirs


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_named_resources_keep_their_names(templates, name) -> None:
    ours = _resources(templates, name)
    names = {
        logical_id: ours[logical_id]["Properties"][NAME_PROPERTY[ours[logical_id]["Type"]]]
        for logical_id in TODAYS[name]["names"]
    }
    assert names == TODAYS[name]["names"]


def test_bus_keeps_its_name_and_archive(templates) -> None:
    ours = _resources(templates, "events")
    for logical_id, properties in TODAYS["events"]["properties"].items():
        assert {p: ours[logical_id]["Properties"].get(p) for p in properties} == properties
