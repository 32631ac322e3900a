"""What the CDK app names beyond the stage's own names (``tools/stages.py``): Chalice's logical
ids for what ``chalice package`` generates, kept so that a stage deployed before CDK updates in
place; the CDK context keys; and the two helpers every stack uses on its resources."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Validations
from chalice.utils import to_cfn_resource_name
from constructs import Construct

DEFAULT_STAGE = "dev"
API_STAGE = "api"  # api_gateway_stage of every .chalice/config.json: the URL's path
# CDK context keys (``cdk synth -c stage=prod``); LOCALSTACK=1 in the environment does what
# -c localstack=true does (the Makefile sets it for cdklocal).
STAGE_CONTEXT, LOCALSTACK_CONTEXT = "stage", "localstack"
LOCALSTACK_ENDPOINT_CONTEXT = "localstackEndpoint"  # where the gateway reaches LocalStack's APIs


def function_id(handler: str) -> str:
    """The logical id Chalice gives ``handler``'s function (CamelCase of its name)."""
    return to_cfn_resource_name(handler)


def event_source_id(handler: str, kind: str) -> str:
    """The key of the SAM event Chalice gives ``handler`` (``kind``: dynamodb or sqs)."""
    return to_cfn_resource_name(f"{handler}-{kind}-event-source")


def function_suffix(handler: str) -> str:
    """What follows the stack's name in an event function's name: ``-relay-user-changes``."""
    return "-" + handler.replace("_", "-")


def keep_id(construct: Construct, logical_id: str) -> None:
    """Give ``construct``'s CloudFormation resource the logical id today's stacks have: a named
    resource under a new id is created before the old one is deleted, and the names clash."""
    child = construct.node.default_child
    assert isinstance(child, CfnResource), construct.node.path
    child.override_logical_id(logical_id)


def acknowledge(construct: Construct, finding: str, reason: str) -> None:
    """A cdk-nag finding acknowledged on ``construct`` alone, with why it is right here."""
    Validations.of(construct).acknowledge(Acknowledgment(id=finding, reason=reason))
