"""Operator commands that act on a stage's tables directly, outside the public API.

Roles are not something any API route can grant, including to an admin: the first admin has to
come from someone with access to the table, which is the operator. user_api reads the role from
the table on every admin action, so a grant or a revocation applies at once, to tokens already
issued too (a token's ``roles`` claim only catches up at the next login).

    python -m tools.admin grant-role alice admin [--stage local]
    python -m tools.admin revoke-role alice admin --stage dev [--localstack]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import boto3
from botocore.exceptions import ClientError

from tools import services, stages


def _change_roles(dynamodb: Any, table: str, username: str, action: str, role: str) -> bool:
    """``ADD`` or ``DELETE`` ``role`` in ``username``'s role set, only if the user exists (one
    conditional UpdateItem); False when there is no such user."""
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"username_key": {"S": username.lower()}},
            UpdateExpression=f"{action} #r :r",
            ConditionExpression="attribute_exists(username_key)",
            ExpressionAttributeNames={"#r": "roles"},
            ExpressionAttributeValues={":r": {"SS": [role]}},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def grant_role(dynamodb: Any, table: str, username: str, role: str) -> bool:
    """Add ``role`` to ``username``'s roles; False when there is no such user."""
    return _change_roles(dynamodb, table, username, "ADD", role)


def revoke_role(dynamodb: Any, table: str, username: str, role: str) -> bool:
    """Remove ``role`` from ``username``'s roles; False when there is no such user."""
    return _change_roles(dynamodb, table, username, "DELETE", role)


def deployed_table(cloudformation: Any, stage: str) -> str:
    """A deployed stage's users table: CloudFormation named it, the stack's output says how."""
    stack = stages.Naming(stage).stack(services.USER)
    outputs = cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    for output in outputs:
        if output["OutputKey"] == "TableName":
            return str(output["OutputValue"])
    raise SystemExit(f"stack {stack} has no TableName output: is stage {stage!r} deployed?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("grant-role", "give a user a role (e.g. admin)"),
        ("revoke-role", "take a role away from a user"),
    ):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("username")
        sub.add_argument("role", choices=["admin"])
        sub.add_argument("--stage", default="local")
        sub.add_argument("--localstack", action="store_true", help="a stage deployed to LocalStack")
    args = parser.parse_args(argv)

    if args.stage == "local":
        # The local run's moto server, unless the caller already points boto3 elsewhere.
        port = os.environ.get("DYNAMODB_PORT", "5100")
        os.environ.setdefault("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{port}")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "local")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        table = services.USER.stage_env(args.stage)["TABLE_NAME"]
    else:
        if args.localstack:
            stages.localstack_environment()
        table = deployed_table(boto3.client("cloudformation"), args.stage)
    granting = args.command == "grant-role"
    change = grant_role if granting else revoke_role
    if not change(boto3.client("dynamodb"), table, args.username, args.role):
        print(f"no user {args.username!r} in {table}", file=sys.stderr)
        return 1
    verb = "now has" if granting else "no longer has"
    print(f"{args.username} {verb} role {args.role!r}, effective at once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
