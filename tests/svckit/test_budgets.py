"""The AWS call budget per stage (svckit.aws) and what waits on it: the gateway's deadline for a
service, and Lambda's timeout for each function."""

from __future__ import annotations

import pytest

from svckit import aws
from tools import services

STAGES = sorted({*aws.BUDGETS, "dev"})


@pytest.mark.parametrize("stage", STAGES)
def test_a_service_answers_before_the_gateway_gives_up(stage):
    """Not one call's worst case: a request's, several calls that stop starting at its time."""
    spent = aws.budget(stage)
    assert spent.upstream_deadline > spent.worst_request > spent.worst_case


def test_aws_keeps_the_tight_budget():
    """On AWS, DynamoDB answers in milliseconds: one retry of a lost connection."""
    assert aws.budget("dev") == aws.AWS
    assert aws.AWS.worst_case == 2 * (0.5 + 1.0) + 1.0


def test_the_local_stage_waits_longer_than_aws_for_a_queued_engine():
    assert aws.budget("local").read > aws.AWS.read


@pytest.mark.parametrize("service", services.SERVICES, ids=lambda s: s.name)
def test_every_deployed_function_outlasts_its_calls(service):
    """A Lambda timed out mid-call answers API Gateway's 504, not the service's 503: each
    function's timeout is above what waits inside it (a service's AWS calls, the gateway's
    upstream deadline)."""
    config = service.config()
    timeout = config["stages"]["dev"].get("lambda_timeout", config["lambda_timeout"])
    waited = aws.AWS.upstream_deadline if service is services.GATEWAY else aws.AWS.worst_request
    assert timeout > waited
