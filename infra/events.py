"""The events as CDK, from ``tools/topology.py`` alone: the stage's bus stack (both data services
publish and subscribe, so neither can own it, and a rule cannot outlive its bus), and each
service stack's relays and subscriptions.

:func:`wire` points the event functions ``chalice package`` made with a placeholder stream or
queue ARN (``svckit.events``) at the stack's own, and gives each function's role one policy of
exactly what it does. CDK's grant helpers are wider (``grantStreamRead`` adds
``dynamodb:ListStreams`` on ``*``; ``grantConsumeMessages`` and an SQS rule target add
``GetQueueAttributes``/``GetQueueUrl``): every statement is written out, and the rule's target
is set on the rule itself, with no queue policy of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy, Stack, aws_events, aws_sqs
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.packaging import event_source_id, function_id, function_suffix
from tools import topology
from tools.stages import Naming

if TYPE_CHECKING:
    from infra.service import ServiceStack

# What Lambda needs to read a table stream (AWS's documented set for an event source mapping),
# and to drain an SQS queue for a function (and nothing to send to it).
STREAM_READ_ACTIONS = [
    f"dynamodb:{a}" for a in ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")
]
QUEUE_DRAIN_ACTIONS = [
    f"sqs:{a}"
    for a in ("ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes")
]
# svckit.events.apply_once/record_once: a conditional Put in a transaction is authorised as
# PutItem; a consumer that checks before applying (was_applied) also reads it: GetItem.
RECORD_PROCESSED_ACTIONS, CHECK_PROCESSED_ACTIONS = ["dynamodb:PutItem"], ["dynamodb:GetItem"]
# How long EventBridge retries delivering to a subscription queue before dead-lettering: its
# maximums, written out so that a change of default cannot shorten them.
RULE_RETRY_ATTEMPTS, RULE_EVENT_AGE_SECONDS = 185, 24 * 3600
REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]


def keep_id(construct: Construct, logical_id: str) -> None:
    """Give ``construct``'s CloudFormation resource the logical id today's stacks have: a named
    resource under a new id is created before the old one is deleted, and the names clash."""
    child = construct.node.default_child
    assert isinstance(child, cdk.CfnResource), construct.node.path
    child.override_logical_id(logical_id)


def acknowledge(construct: Construct, finding: str, reason: str) -> None:
    """A cdk-nag finding acknowledged on ``construct`` alone, with why it is right here."""
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


class EventsStack(Stack):
    """The bus ``shop-<stage>`` and an archive of every event, for StartReplay (consumers'
    processed-events records outlive it: a replayed event they applied is a no-op)."""

    def __init__(self, scope: Construct, stage: str) -> None:
        name = Naming(stage).events_stack
        super().__init__(scope, name, stack_name=name)
        bus_name, sources = topology.bus_name(stage), sorted({r.source for r in topology.RELAYS})
        bus = aws_events.EventBus(self, "EventBus", event_bus_name=bus_name)
        keep_id(bus, "EventBus")
        archive = bus.archive(
            "EventArchive", archive_name=f"{bus_name}-archive",
            description="Every event the services publish, for replay",
            event_pattern=aws_events.EventPattern(source=sources),
            retention=Duration.days(topology.ARCHIVE_RETENTION_DAYS))  # fmt: skip
        keep_id(archive, "EventArchive")
        cfn_bus: aws_events.CfnEventBus = bus.node.default_child  # type: ignore[assignment]
        # GetAtt Name rather than Ref: the same value on AWS, and emulators' Ref of a bus is
        # not always its name.
        self.bus_name: str = cfn_bus.attr_name
        self.bus_arn: str = cfn_bus.attr_arn


def _queue(stack: Stack, logical_id: str, name: str, retention: int, **extra: Any) -> aws_sqs.Queue:
    """A named queue encrypted with SQS's own keys (EventBridge cannot send to one encrypted with
    the AWS-managed KMS key, and a key of our own is a monthly cost), refusing plain HTTP."""
    queue = aws_sqs.Queue(
        stack, logical_id, queue_name=name, retention_period=Duration.seconds(retention),
        encryption=aws_sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
        removal_policy=RemovalPolicy.DESTROY, **extra)  # fmt: skip
    keep_id(queue, logical_id)
    # The queue's one policy (enforce_ssl's statement now, a rule's later): two QueuePolicy
    # resources on one queue would overwrite each other.
    keep_id(queue.node.find_child("Policy"), f"{logical_id}Policy")
    return queue


def _events_policy(stack: ServiceStack, handler: str, *statements: tuple[Any, ...]) -> None:
    """``handler``'s role's one policy of the event plumbing (``<Function>EventsPolicy``), of
    statements (sid, actions, resource, condition)."""
    fn_id = function_id(handler)
    dashed = stack.service.name.replace("_", "-") + function_suffix(handler)
    policy = iam.CfnPolicy(
        stack, f"{fn_id}EventsPolicy", policy_name=f"{dashed}-events",
        roles=[stack.role_of(fn_id).ref], policy_document=iam.PolicyDocument(statements=[
            iam.PolicyStatement(sid=sid, actions=actions, resources=[resource], conditions=when)
            for sid, actions, resource, when in statements]))  # fmt: skip
    policy.override_logical_id(f"{fn_id}EventsPolicy")


def relay(stack: ServiceStack, relay: topology.Relay, bus_arn: str) -> None:
    """A table's stream relayed to the bus by its ``@app.on_dynamodb_record`` function, with a
    failure queue, and a policy to read that stream, send to that queue and publish."""
    table = stack.resource(relay.table)
    name, retention = relay.failure_queue_name(stack.stage), topology.DLQ_RETENTION_SECONDS
    failures = _queue(stack, relay.failure_queue, name, retention)
    acknowledge(
        failures, "AwsSolutions-SQS3", "It is a dead-letter queue: the stream's event source "
        "mapping sends a failed batch's position here (its OnFailure destination); cdk-nag "
        "recognises only a RedrivePolicy's")  # fmt: skip
    source_id = event_source_id(relay.handler, "dynamodb")
    stack.resource(function_id(relay.handler)).add_property_override(
        f"Events.{source_id}.Properties", {
            "Stream": table.attr_stream_arn, "BatchSize": relay.batch_size,
            # A relay made after the table has changes must not skip them; events are
            # idempotent by record id.
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": relay.maximum_retry_attempts,
            "BisectBatchOnFunctionError": True,
            "MaximumRecordAgeInSeconds": relay.maximum_record_age_seconds,
            "FunctionResponseTypes": REPORT_BATCH_ITEM_FAILURES,
            "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": failures.queue_arn}},
        })  # fmt: skip
    # Only onto the stage's bus, and only under this service's own source: a relay cannot
    # announce another service's events.
    _events_policy(
        stack, relay.handler,
        ("ReadOwnTableStream", STREAM_READ_ACTIONS, table.attr_stream_arn, None),
        ("PublishOwnEvents", ["events:PutEvents"], bus_arn,
         {"StringEquals": {"events:source": relay.source}}),
        ("ReportFailedBatches", ["sqs:SendMessage"], failures.queue_arn, None))  # fmt: skip
    stack.dead_letter_queues[relay.failure_queue] = failures


def subscribe(stack: ServiceStack, sub: topology.Subscription, bus_name: str) -> None:
    """A consumer's queue (and dead-letter queue) fed by a rule on the bus and drained by its
    ``@app.on_sqs_message`` function, whose policy drains it and records processed events."""
    stage = stack.stage
    dlq_name, retention = sub.dead_letter_queue_name(stage), topology.DLQ_RETENTION_SECONDS
    dead_letters = _queue(stack, sub.dead_letter_queue, dlq_name, retention)
    queue = _queue(
        stack, sub.queue, sub.queue_name(stage), topology.QUEUE_RETENTION_SECONDS,
        visibility_timeout=Duration.seconds(sub.visibility_timeout_seconds),
        dead_letter_queue=aws_sqs.DeadLetterQueue(
            queue=dead_letters, max_receive_count=sub.max_receive_count))  # fmt: skip
    rule = aws_events.Rule(
        stack, sub.rule, rule_name=sub.rule_name(stage),
        description=f"{sub.source} {', '.join(sub.types)} for {sub.service.name}",
        event_bus=aws_events.EventBus.from_event_bus_name(stack, f"{sub.rule}Bus", bus_name),
        event_pattern=aws_events.EventPattern(source=[sub.source], detail_type=list(sub.types)),
    )  # fmt: skip
    keep_id(rule, sub.rule)
    # The target written out: aws_events_targets.SqsQueue would add a queue policy granting
    # GetQueueAttributes and GetQueueUrl too.
    cfn_rule: aws_events.CfnRule = rule.node.default_child  # type: ignore[assignment]
    cfn_rule.targets = [aws_events.CfnRule.TargetProperty(
        id=sub.queue, arn=queue.queue_arn,
        dead_letter_config=aws_events.CfnRule.DeadLetterConfigProperty(arn=dead_letters.queue_arn),
        retry_policy=aws_events.CfnRule.RetryPolicyProperty(
            maximum_retry_attempts=RULE_RETRY_ATTEMPTS,
            maximum_event_age_in_seconds=RULE_EVENT_AGE_SECONDS))]  # fmt: skip
    for target, sid in ((queue, "OwnRuleOnly"), (dead_letters, "OwnRuleDeadLettersOnly")):
        # EventBridge may send to the queue on behalf of this one rule only.
        target.add_to_resource_policy(iam.PolicyStatement(
            sid=sid, principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["sqs:SendMessage"], resources=[target.queue_arn],
            conditions={"ArnEquals": {"aws:SourceArn": rule.rule_arn}}))  # fmt: skip
    function = stack.resource(function_id(sub.handler))
    properties: dict[str, Any] = {
        "Queue": queue.queue_arn, "BatchSize": sub.batch_size,
        # svckit.events.consume names only the failed messages; without this Lambda would
        # retry the whole batch, applied messages included.
        "FunctionResponseTypes": REPORT_BATCH_ITEM_FAILURES}  # fmt: skip
    if function.reserved_concurrent_executions is not None:
        # Lambda's pollers would otherwise scale past the reserved concurrency, and a throttled
        # batch returns with its receive count spent: dead letters without a failure.
        maximum = int(function.reserved_concurrent_executions)
        properties["ScalingConfig"] = {"MaximumConcurrency": maximum}
    function.add_property_override(
        f"Events.{event_source_id(sub.handler, 'sqs')}.Properties", properties
    )
    checks = CHECK_PROCESSED_ACTIONS if sub.checks_before_applying else []
    _events_policy(
        stack, sub.handler,
        ("DrainOwnQueue", QUEUE_DRAIN_ACTIONS, queue.queue_arn, None),
        ("RecordProcessedEvents", [*RECORD_PROCESSED_ACTIONS, *checks],
         stack.resource(topology.PROCESSED_EVENTS_TABLE).attr_arn, None))  # fmt: skip
    stack.queues[sub.queue] = queue
    stack.dead_letter_queues[sub.dead_letter_queue] = dead_letters
    stack.rules[sub.rule] = rule
