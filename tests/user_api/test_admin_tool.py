"""The operator's grant-role command, on the local stage's table and on a deployed stage's."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.conftest import REGION, post_json
from tools import admin, services, stages

TABLE = services.USER.stage_env("local")["TABLE_NAME"]


def test_grant_role_reaches_the_token_at_next_login(register, login, tables, user_client):
    register("alice")
    assert admin.grant_role(tables, TABLE, "ALICE", "admin")
    token = login("alice")
    promoted = post_json(
        user_client, "/users/bob/points", {"points": 1}, {"Authorization": f"Bearer {token}"}
    )
    assert promoted.status_code == 404  # authorised as admin; bob just does not exist


def test_grant_role_on_an_unknown_user_changes_nothing(tables):
    assert admin.grant_role(tables, TABLE, "ghost", "admin") is False
    assert tables.scan(TableName=TABLE)["Count"] == 0


def test_a_deployed_stage_table_comes_from_the_stack_output(tables):
    """CloudFormation names a deployed table; the tool reads it from the stack's output."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    topic = {"T": {"Type": "AWS::SNS::Topic"}}
    with_output = {"Resources": topic, "Outputs": {"TableName": {"Value": "shop-dev-users-XYZ"}}}
    dev = stages.Naming("dev").stack(services.USER)
    cloudformation.create_stack(StackName=dev, TemplateBody=json.dumps(with_output))
    qa = stages.Naming("qa").stack(services.USER)
    cloudformation.create_stack(StackName=qa, TemplateBody=json.dumps({"Resources": topic}))

    assert admin.deployed_table(cloudformation, "dev") == "shop-dev-users-XYZ"
    with pytest.raises(SystemExit, match="is stage 'qa' deployed"):
        admin.deployed_table(cloudformation, "qa")


def test_revoke_role_applies_at_once_to_a_token_already_issued(
    register, login, tables, user_client
):
    register("alice")
    register("boss", "boss-password-1")
    assert admin.grant_role(tables, TABLE, "boss", "admin")
    token = {"Authorization": f"Bearer {login('boss', 'boss-password-1')}"}
    assert post_json(user_client, "/users/alice/points", {"points": 1}, token).status_code == 200
    assert admin.revoke_role(tables, TABLE, "BOSS", "admin")
    assert post_json(user_client, "/users/alice/points", {"points": 1}, token).status_code == 403
    assert admin.revoke_role(tables, TABLE, "ghost", "admin") is False
