"""The events as CDK: the stage's bus stack, and the relay and subscription constructs a service
stack gets from ``tools/topology.py`` (and from nothing else).

The bus is a stack of its own: both data services publish to it and subscribe to it, so neither
can own it, and a rule cannot outlive its bus (it is deployed first, destroyed last).

The constructs wire the event functions that ``chalice package`` generated with a placeholder
stream or queue ARN (``svckit.events``) to the stack's own table stream or queue, and give each
function's role one policy of exactly what that function does. CDK's grant helpers are wider
than that (``grantStreamRead`` adds ``dynamodb:ListStreams`` on ``*``, ``grantConsumeMessages``
and an SQS rule target add ``GetQueueAttributes``/``GetQueueUrl``), so every statement is
written out, and the rule target is :class:`_OwnQueueTarget`, which adds no policy of its own.

Named resources keep the logical ids ``tools/eventstack.py`` gave them: a named queue or rule
under a new logical id would be created before the old one is deleted, and the name clash would
fail the update.
"""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import (
    Acknowledgment,
    CfnResource,
    Duration,
    RemovalPolicy,
    Stack,
    Validations,
    aws_dynamodb,
    aws_events,
    aws_sam,
    aws_sqs,
)
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import naming
from tools import topology
from tools.services import ServiceDef

BUS = "EventBus"
ARCHIVE = "EventArchive"
# What Lambda needs to read a table stream (AWS's documented set for an event source mapping).
STREAM_READ_ACTIONS = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
]
# What Lambda needs to drain an SQS queue for a function (and nothing to send to it).
QUEUE_DRAIN_ACTIONS = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
]
# svckit.events.apply_once/record_once: a conditional Put in a transaction is authorised as
# PutItem; a consumer that checks before applying (was_applied) also reads it: GetItem.
RECORD_PROCESSED_ACTIONS = ["dynamodb:PutItem"]
CHECK_PROCESSED_ACTIONS = ["dynamodb:GetItem"]
# How long EventBridge retries delivering to a subscription queue before dead-lettering: its
# maximums, written out so that a change of default cannot shorten them.
RULE_RETRY_ATTEMPTS = 185
RULE_EVENT_AGE = Duration.hours(24)
REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
EVENTS_PRINCIPAL = "events.amazonaws.com"


def _keep_id(construct: Construct, logical_id: str) -> None:
    """Give ``construct``'s CloudFormation resource the logical id today's stacks have."""
    child = construct.node.default_child
    assert isinstance(child, CfnResource), construct.node.path
    child.override_logical_id(logical_id)


class EventsStack(Stack):
    """``shop-<stage>-events``: the bus ``shop-<stage>`` and an archive of every event the
    services publish, kept for StartReplay (consumers' processed-events records outlive it, so
    a replayed event they applied is a no-op)."""

    def __init__(self, scope: Construct, stage: str, **kwargs: Any) -> None:
        name = naming.Naming(stage).events_stack
        super().__init__(scope, name, stack_name=name, **kwargs)
        bus_name = topology.bus_name(stage)
        self.bus = aws_events.EventBus(self, BUS, event_bus_name=bus_name)
        _keep_id(self.bus, BUS)
        self.archive = self.bus.archive(
            ARCHIVE,
            archive_name=f"{bus_name}-archive",
            description="Every event the services publish, for replay",
            event_pattern=aws_events.EventPattern(
                source=sorted({relay.source for relay in topology.RELAYS})
            ),
            retention=Duration.days(topology.ARCHIVE_RETENTION_DAYS),
        )
        _keep_id(self.archive, ARCHIVE)
        cfn_bus = self.bus.node.default_child
        assert isinstance(cfn_bus, aws_events.CfnEventBus)
        # GetAtt Name rather than Ref: the same value on AWS, and emulators' Ref of a bus is
        # not always its name.
        self.bus_name: str = cfn_bus.attr_name
        self.bus_arn: str = cfn_bus.attr_arn


def _queue(
    scope: Construct, logical_id: str, name: str, retention_seconds: int, **extra: Any
) -> aws_sqs.Queue:
    """A named queue encrypted with SQS's own keys (EventBridge cannot send to one encrypted with
    the AWS-managed KMS key, and a key of our own is a monthly cost), refusing plain HTTP."""
    queue = aws_sqs.Queue(
        scope,
        logical_id,
        queue_name=name,
        retention_period=Duration.seconds(retention_seconds),
        encryption=aws_sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        removal_policy=RemovalPolicy.DESTROY,
        **extra,
    )
    _keep_id(queue, logical_id)
    # The queue's one policy (enforce_ssl's statement now, a rule's later): two QueuePolicy
    # resources on one queue would overwrite each other.
    _keep_id(queue.node.find_child("Policy"), f"{logical_id}Policy")
    return queue


def _events_policy(
    scope: Construct, service: ServiceDef, handler: str, role: iam.CfnRole,
    statements: list[iam.PolicyStatement],
) -> iam.CfnPolicy:  # fmt: skip
    """``handler``'s role's one policy of the event plumbing (``<Function>EventsPolicy``)."""
    logical_id = f"{naming.function_id(handler)}EventsPolicy"
    dashed = f"{service.name.replace('_', '-')}{naming.function_suffix(handler)}"
    policy = iam.CfnPolicy(
        scope,
        logical_id,
        policy_name=f"{dashed}-events",
        roles=[role.ref],
        policy_document=iam.PolicyDocument(statements=statements),
    )
    policy.override_logical_id(logical_id)
    return policy


class Relay(Construct):
    """A table's stream relayed to the bus by the service's ``@app.on_dynamodb_record``
    function: the event source (from the oldest record still held, batches bisected on
    failure), the failure queue, and a policy to read that stream, send to that queue and put
    events on the stage's bus under this service's own source only."""

    def __init__(
        self,
        scope: Construct,
        relay: topology.Relay,
        stage: str,
        function: aws_sam.CfnFunction,
        role: iam.CfnRole,
        table: aws_dynamodb.CfnTable,
        bus_arn: str,
    ) -> None:
        super().__init__(scope, f"Relay-{relay.handler}")
        stack = Stack.of(self)
        self.failure_queue = _queue(
            stack, relay.failure_queue, relay.failure_queue_name(stage),
            topology.DLQ_RETENTION_SECONDS,
        )  # fmt: skip
        Validations.of(self.failure_queue).acknowledge(Acknowledgment(
            id="AwsSolutions-SQS3",
            reason="It is a dead-letter queue: the stream's event source mapping sends a failed "
            "batch's position here (its OnFailure destination); cdk-nag recognises only a "
            "RedrivePolicy's",
        ))  # fmt: skip
        source_id = naming.event_source_id(relay.handler, "dynamodb")
        function.add_property_override(
            f"Events.{source_id}.Properties",
            {
                "Stream": table.attr_stream_arn,
                "BatchSize": relay.batch_size,
                # A relay made after the table has changes must not skip them; events are
                # idempotent by record id.
                "StartingPosition": "TRIM_HORIZON",
                "MaximumRetryAttempts": relay.maximum_retry_attempts,
                "BisectBatchOnFunctionError": True,
                "MaximumRecordAgeInSeconds": relay.maximum_record_age_seconds,
                "FunctionResponseTypes": REPORT_BATCH_ITEM_FAILURES,
                "DestinationConfig": {
                    "OnFailure": {"Type": "SQS", "Destination": self.failure_queue.queue_arn}
                },
            },
        )
        self.policy = _events_policy(stack, relay.service, relay.handler, role, [
            iam.PolicyStatement(
                sid="ReadOwnTableStream", actions=STREAM_READ_ACTIONS,
                resources=[table.attr_stream_arn],
            ),
            # Only onto the stage's bus, and only under this service's own source: a relay
            # cannot announce another service's events.
            iam.PolicyStatement(
                sid="PublishOwnEvents", actions=["events:PutEvents"], resources=[bus_arn],
                conditions={"StringEquals": {"events:source": relay.source}},
            ),
            iam.PolicyStatement(
                sid="ReportFailedBatches", actions=["sqs:SendMessage"],
                resources=[self.failure_queue.queue_arn],
            ),
        ])  # fmt: skip


@jsii.implements(aws_events.IRuleTarget)
class _OwnQueueTarget:
    """An SQS target that dead-letters into the consumer's own dead-letter queue and adds no
    queue policy (``aws_events_targets.SqsQueue`` would grant ``GetQueueAttributes`` and
    ``GetQueueUrl`` too; :class:`Subscription` writes the one statement needed)."""

    def __init__(self, queue: aws_sqs.IQueue, dead_letters: aws_sqs.IQueue) -> None:
        self._queue = queue
        self._dead_letters = dead_letters

    def bind(self, _rule: aws_events.IRule, _id: str | None = None) -> aws_events.RuleTargetConfig:
        return aws_events.RuleTargetConfig(
            arn=self._queue.queue_arn,
            dead_letter_config=aws_events.CfnRule.DeadLetterConfigProperty(
                arn=self._dead_letters.queue_arn
            ),
            retry_policy=aws_events.CfnRule.RetryPolicyProperty(
                maximum_retry_attempts=RULE_RETRY_ATTEMPTS,
                maximum_event_age_in_seconds=int(RULE_EVENT_AGE.to_seconds()),
            ),
        )


def processed_events_actions(sub: topology.Subscription) -> list[str]:
    checks = CHECK_PROCESSED_ACTIONS if sub.checks_before_applying else []
    return [*RECORD_PROCESSED_ACTIONS, *checks]


class Subscription(Construct):
    """A consumer's queue fed by a rule on the bus: the queue (redriving to its dead-letter
    queue), the rule, queue policies that let only that rule send, the event source of the
    ``@app.on_sqs_message`` function, and a policy to drain that queue and record processed
    events."""

    def __init__(
        self,
        scope: Construct,
        sub: topology.Subscription,
        stage: str,
        function: aws_sam.CfnFunction,
        role: iam.CfnRole,
        processed_table: aws_dynamodb.CfnTable,
        bus_name: str,
        reserved_concurrency: int | None,
    ) -> None:
        super().__init__(scope, f"Subscription-{sub.handler}")
        stack = Stack.of(self)
        self.dead_letter_queue = _queue(
            stack, sub.dead_letter_queue, sub.dead_letter_queue_name(stage),
            topology.DLQ_RETENTION_SECONDS,
        )  # fmt: skip
        self.queue = _queue(
            stack, sub.queue, sub.queue_name(stage), topology.QUEUE_RETENTION_SECONDS,
            visibility_timeout=Duration.seconds(sub.visibility_timeout_seconds),
            dead_letter_queue=aws_sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=sub.max_receive_count
            ),
        )  # fmt: skip
        bus = aws_events.EventBus.from_event_bus_name(self, "Bus", bus_name)
        self.rule = aws_events.Rule(
            stack,
            sub.rule,
            rule_name=sub.rule_name(stage),
            description=f"{sub.source} {', '.join(sub.types)} for {sub.service.name}",
            event_bus=bus,
            event_pattern=aws_events.EventPattern(source=[sub.source], detail_type=list(sub.types)),
            targets=[_OwnQueueTarget(self.queue, self.dead_letter_queue)],
        )
        _keep_id(self.rule, sub.rule)
        cfn_rule = self.rule.node.default_child
        assert isinstance(cfn_rule, aws_events.CfnRule)
        cfn_rule.add_property_override("Targets.0.Id", sub.queue)
        for queue, sid in (
            (self.queue, "OwnRuleOnly"),
            (self.dead_letter_queue, "OwnRuleDeadLettersOnly"),
        ):
            # EventBridge may send to the queue on behalf of this one rule only.
            queue.add_to_resource_policy(iam.PolicyStatement(
                sid=sid, principals=[iam.ServicePrincipal(EVENTS_PRINCIPAL)],
                actions=["sqs:SendMessage"], resources=[queue.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": self.rule.rule_arn}},
            ))  # fmt: skip
        properties: dict[str, Any] = {
            "Queue": self.queue.queue_arn,
            "BatchSize": sub.batch_size,
            # svckit.events.consume names only the failed messages; without this Lambda would
            # retry the whole batch, applied messages included.
            "FunctionResponseTypes": REPORT_BATCH_ITEM_FAILURES,
        }
        if reserved_concurrency is not None:
            # Lambda's pollers would otherwise scale past the reserved concurrency, and a
            # throttled batch returns with its receive count spent: dead letters without a
            # failure.
            properties["ScalingConfig"] = {"MaximumConcurrency": reserved_concurrency}
        source_id = naming.event_source_id(sub.handler, "sqs")
        function.add_property_override(f"Events.{source_id}.Properties", properties)
        self.policy = _events_policy(stack, sub.service, sub.handler, role, [
            iam.PolicyStatement(
                sid="DrainOwnQueue", actions=QUEUE_DRAIN_ACTIONS,
                resources=[self.queue.queue_arn],
            ),
            iam.PolicyStatement(
                sid="RecordProcessedEvents", actions=processed_events_actions(sub),
                resources=[processed_table.attr_arn],
            ),
        ])  # fmt: skip
