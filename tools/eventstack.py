"""The events as CloudFormation, generated from ``tools/topology.py`` and from nothing else.

Two things come out of here:

* :func:`bus_template`: the stage's own stack (``shop-<stage>-events``), deployed before every
  other stack and destroyed after them: the EventBridge bus and an archive of everything the
  services publish on it. Its outputs (the bus's name and ARN) become the ``EventBusName`` and
  ``EventBusArn`` parameters of the service stacks.
* :func:`service_fragment`: what one service's template needs for its relays and its
  subscriptions, deep-merged by ``tools.package`` into the template ``chalice package`` writes.
  Chalice generates each event function, its role (from ``lambda_functions.<fn>.iam_policy_file``
  in ``.chalice/config.json``) and a SAM event whose stream or queue ARN is a placeholder
  (``svckit.events``); this fragment replaces the placeholder with the stack's own table stream
  or queue, sets the retry settings of the topology, and adds the queues, the rule (whose target
  dead-letters into the consumer's dead-letter queue), the two queue policies that let only that
  rule send, and one IAM policy per event function that allows exactly what that function does.

The bus is a stack of its own, not part of a service's: both services publish to it and
subscribe to it, so neither can own it, and a rule cannot outlive its bus (the bus goes last).

Names of the queues and rules come from the stack's name (``${AWS::StackName}-<suffix>``), like
the functions' names, so that two stages never share one even when a template is reused; they
resolve to exactly the names ``topology`` gives (the local wiring and the operator's commands
use those), which the deploy tests check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chalice.utils import to_cfn_resource_name

from svckit import events
from tools import topology
from tools.services import ServiceDef

API_FUNCTION = "APIHandler"  # Chalice's logical id for the function that serves the REST API
BUS = "EventBus"  # logical ids in the bus stack
ARCHIVE = "EventArchive"
BUS_NAME_PARAMETER = "EventBusName"  # the service stacks' parameters, from the bus's outputs
BUS_ARN_PARAMETER = "EventBusArn"
EVENTS_STACK_PART = "events"  # the bus stack is shop-<stage>-events
TEMPLATE_FILE = "template.json"  # build/<stage>/events/template.json, written by make package
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
# The consumer's processed-events record (svckit.events.apply_once, record_once): a conditional
# Put inside a transaction is authorised as PutItem. Only a consumer that checks the record
# before applying (was_applied; topology.Subscription.checks_before_applying) reads it: GetItem.
RECORD_PROCESSED_ACTIONS = ["dynamodb:PutItem"]
CHECK_PROCESSED_ACTIONS = ["dynamodb:GetItem"]
# How long EventBridge keeps trying to deliver an event to a subscription queue (throttling, a
# 5xx of SQS) before it dead-letters it: EventBridge's own defaults, its maximums, written out so
# that a change of default cannot shorten them. An SQS target is rarely unavailable for long,
# and a day matches how long a relay holds its shard. Errors no retry can fix (the queue's
# policy refuses, the queue is gone) are not retried: the event goes to the dead-letter queue
# at once.
RULE_RETRY_ATTEMPTS = 185
RULE_EVENT_AGE_SECONDS = 24 * 3600
REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]
# Lambda's ceiling for a function's name; SQS's for a queue's; EventBridge's for a rule's.
NAME_LIMITS = {"function": 64, "queue": 80, "rule": 64}


def stack_name(stage: str, part: str) -> str:
    """Every stack's name: ``shop-<stage>-<part>`` (``user-api``, ``events``...)."""
    return f"{topology.PROJECT}-{stage}-{part}"


def service_stack_name(service: ServiceDef, stage: str) -> str:
    return stack_name(stage, service.name.replace("_", "-"))


def function_id(handler: str) -> str:
    """The logical id Chalice gives the function of ``handler`` (CamelCase of its name)."""
    return to_cfn_resource_name(handler)


def role_id(handler: str) -> str:
    """The logical id of the role Chalice makes for a function with its own policy file."""
    return to_cfn_resource_name(f"{handler}_role")


def event_source_id(handler: str, kind: str) -> str:
    """The key of the SAM event Chalice gives ``handler`` (``kind``: dynamodb or sqs)."""
    return to_cfn_resource_name(f"{handler}-{kind}-event-source")


def events_policy_id(handler: str) -> str:
    return f"{function_id(handler)}EventsPolicy"


def function_suffix(handler: str) -> str:
    """What follows the stack's name in the function's name: ``-relay-user-changes``."""
    return "-" + handler.replace("_", "-")


def event_functions(service: ServiceDef) -> dict[str, str]:
    """The service's event functions of the topology: logical id -> handler name."""
    handlers = [r.handler for r in topology.relays_of(service)]
    handlers += [s.handler for s in topology.subscriptions_of(service)]
    return {function_id(handler): handler for handler in handlers}


def _by_stack_name(service: ServiceDef, stage: str, name: str) -> dict[str, str]:
    """``name`` (one of the topology's, for ``stage``) as the stack writes it: after its own
    name. The topology's names all start with the service stack's name; one that does not
    would be a name the stack cannot make, so it is refused here rather than deployed wrong."""
    prefix = service_stack_name(service, stage)
    if not name.startswith(prefix + "-"):
        raise ValueError(f"topology name {name!r} does not start with the stack name {prefix!r}")
    return {"Fn::Sub": "${AWS::StackName}" + name[len(prefix) :]}


def _arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def _queue(name: dict[str, str], retention_seconds: int, **extra: Any) -> dict[str, Any]:
    """An SQS queue encrypted with SQS's own keys: EventBridge cannot send to a queue encrypted
    with the AWS-managed KMS key (aws/sqs), and a key of our own would be a fixed monthly cost."""
    return {
        "Type": "AWS::SQS::Queue",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "QueueName": name,
            "MessageRetentionPeriod": retention_seconds,
            "SqsManagedSseEnabled": True,
            **extra,
        },
    }


def _policy(name: str, role: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": name,
            "Roles": [_ref(role)],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
        },
    }


def bus_sources() -> list[str]:
    """Every source the services publish under: what the archive keeps."""
    return sorted({relay.source for relay in topology.RELAYS})


def bus_template(stage: str) -> dict[str, Any]:
    """The stage's bus stack: the bus, named ``topology.bus_name(stage)``, and its archive."""
    name = topology.bus_name(stage)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"The {stage} stage's event bus and its archive (tools/eventstack.py)",
        "Resources": {
            BUS: {"Type": "AWS::Events::EventBus", "Properties": {"Name": name}},
            ARCHIVE: {
                # Every event the services publish, kept for StartReplay: a consumer that was
                # wrong can be fixed and fed the events again; its processed-events table (kept
                # longer than the archive) makes a replayed event it applied a no-op.
                "Type": "AWS::Events::Archive",
                "Properties": {
                    "ArchiveName": f"{name}-archive",
                    "Description": "Every event the services publish, for replay",
                    "SourceArn": _arn(BUS),
                    "RetentionDays": topology.ARCHIVE_RETENTION_DAYS,
                    "EventPattern": {"source": bus_sources()},
                },
            },
        },
        "Outputs": {
            # GetAtt Name rather than Ref: the same value on AWS, and moto's Ref of a bus is not
            # its name.
            BUS_NAME_PARAMETER: {"Value": {"Fn::GetAtt": [BUS, "Name"]}},
            BUS_ARN_PARAMETER: {"Value": _arn(BUS)},
            "ArchiveArn": {"Value": _arn(ARCHIVE)},
        },
    }


def write_bus_template(stage: str, out_root: Path) -> Path:
    """``build/<stage>/events/template.json``: what the deploy sends, for reading and linting."""
    path = out_root / EVENTS_STACK_PART / TEMPLATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bus_template(stage), indent=2))
    return path


def chalice_setting(service: ServiceDef, stage: str, handler: str, name: str) -> Any:
    """A function's setting as Chalice resolves it: the stage's ``lambda_functions.<handler>``,
    the stage, the top-level ``lambda_functions.<handler>``, the top level; None if unset."""
    config = service.config()
    section = config.get("stages", {}).get(stage, {})
    for scope in (
        section.get("lambda_functions", {}).get(handler, {}),
        section,
        config.get("lambda_functions", {}).get(handler, {}),
        config,
    ):
        if scope.get(name) is not None:
            return scope[name]
    return None


def _event_function(
    handler: str, variables: dict[str, Any], source: str, properties: dict[str, Any]
) -> dict[str, Any]:
    """What the merge gives ``handler``'s function: the environment ``variables`` and its one
    SAM event of type ``source`` (``DynamoDB`` or ``SQS``) with ``properties``."""
    return {
        "Properties": {
            "Environment": {"Variables": variables},
            "Events": {
                event_source_id(handler, source.lower()): {"Type": source, "Properties": properties}
            },
        }
    }


def _events_policy(
    service: ServiceDef, handler: str, statements: list[dict[str, Any]]
) -> dict[str, Any]:
    """``handler``'s role's policy of the event plumbing (its ``events_policy_id``)."""
    dashed = f"{service.name.replace('_', '-')}{function_suffix(handler)}"
    return _policy(f"{dashed}-events", role_id(handler), statements)


def _relay(service: ServiceDef, stage: str, relay: topology.Relay) -> dict[str, Any]:
    fn = function_id(relay.handler)
    events_properties = {
        "Stream": {"Fn::GetAtt": [relay.table, "StreamArn"]},
        "BatchSize": relay.batch_size,
        # From the oldest record the stream still holds: a relay created (or re-created) after
        # the table has changes must not skip them. Events are idempotent by record id.
        "StartingPosition": "TRIM_HORIZON",
        "MaximumRetryAttempts": relay.maximum_retry_attempts,
        "BisectBatchOnFunctionError": True,
        "MaximumRecordAgeInSeconds": relay.maximum_record_age_seconds,
        # svckit.events.relay answers with the first record it could not publish.
        "FunctionResponseTypes": REPORT_BATCH_ITEM_FAILURES,
        "DestinationConfig": {
            "OnFailure": {"Type": "SQS", "Destination": _arn(relay.failure_queue)}
        },
    }
    statements = [
        {
            "Sid": "ReadOwnTableStream",
            "Effect": "Allow",
            "Action": STREAM_READ_ACTIONS,
            "Resource": {"Fn::GetAtt": [relay.table, "StreamArn"]},
        },
        {
            # Only onto the stage's bus, and only under this service's own source: a relay
            # cannot announce another service's events.
            "Sid": "PublishOwnEvents",
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": _ref(BUS_ARN_PARAMETER),
            "Condition": {"StringEquals": {"events:source": relay.source}},
        },
        {
            "Sid": "ReportFailedBatches",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": _arn(relay.failure_queue),
        },
    ]
    return {
        fn: _event_function(
            relay.handler,
            {events.BUS_SETTING: _ref(BUS_NAME_PARAMETER)},
            "DynamoDB",
            events_properties,
        ),
        # Where a batch goes once its retries are spent (its shard position, not the records):
        # the operator's trace of what was not relayed, kept as long as SQS keeps anything.
        relay.failure_queue: _queue(
            _by_stack_name(service, stage, relay.failure_queue_name(stage)),
            topology.DLQ_RETENTION_SECONDS,
        ),
        events_policy_id(relay.handler): _events_policy(service, relay.handler, statements),
    }


def processed_events_actions(sub: topology.Subscription) -> list[str]:
    """What the consumer may do on its processed-events table: record (PutItem), and read
    the record first only if it checks before applying."""
    checks = CHECK_PROCESSED_ACTIONS if sub.checks_before_applying else []
    return [*RECORD_PROCESSED_ACTIONS, *checks]


def queue_policy_id(queue: str) -> str:
    return f"{queue}Policy"


def _rule_may_send(queue: str, rule: str, sid: str) -> dict[str, Any]:
    """A queue policy: EventBridge may send to ``queue`` on behalf of ``rule`` only."""
    return {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [_ref(queue)],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": sid,
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": _arn(queue),
                        "Condition": {"ArnEquals": {"aws:SourceArn": _arn(rule)}},
                    }
                ],
            },
        },
    }


def _subscription(service: ServiceDef, stage: str, sub: topology.Subscription) -> dict[str, Any]:
    fn = function_id(sub.handler)
    sqs_properties: dict[str, Any] = {
        "Queue": _arn(sub.queue),
        "BatchSize": sub.batch_size,
        # svckit.events.consume names only the messages that failed; without this Lambda would
        # retry the whole batch, applied messages included.
        "FunctionResponseTypes": REPORT_BATCH_ITEM_FAILURES,
    }
    reserved = chalice_setting(service, stage, sub.handler, "reserved_concurrency")
    if reserved is not None:
        # Lambda's pollers would otherwise scale past the function's reserved concurrency, and
        # a throttled batch goes back to the queue with its receive count spent: messages would
        # reach the dead-letter queue without the function ever failing.
        sqs_properties["ScalingConfig"] = {"MaximumConcurrency": int(reserved)}
    statements = [
        {
            "Sid": "DrainOwnQueue",
            "Effect": "Allow",
            "Action": QUEUE_DRAIN_ACTIONS,
            "Resource": _arn(sub.queue),
        },
        {
            "Sid": "RecordProcessedEvents",
            "Effect": "Allow",
            "Action": processed_events_actions(sub),
            "Resource": _arn(topology.PROCESSED_EVENTS_TABLE),
        },
    ]
    return {
        fn: _event_function(
            sub.handler,
            {events.PROCESSED_TABLE_SETTING: _ref(topology.PROCESSED_EVENTS_TABLE)},
            "SQS",
            sqs_properties,
        ),
        sub.queue: _queue(
            _by_stack_name(service, stage, sub.queue_name(stage)),
            topology.QUEUE_RETENTION_SECONDS,
            VisibilityTimeout=sub.visibility_timeout_seconds,
            RedrivePolicy={
                "deadLetterTargetArn": _arn(sub.dead_letter_queue),
                "maxReceiveCount": sub.max_receive_count,
            },
        ),
        sub.dead_letter_queue: _queue(
            _by_stack_name(service, stage, sub.dead_letter_queue_name(stage)),
            topology.DLQ_RETENTION_SECONDS,
        ),
        sub.rule: {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": _by_stack_name(service, stage, sub.rule_name(stage)),
                "Description": f"{sub.source} {', '.join(sub.types)} for {service.name}",
                "EventBusName": _ref(BUS_NAME_PARAMETER),
                "EventPattern": sub.event_pattern(),
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": sub.queue,
                        "Arn": _arn(sub.queue),
                        # Without it EventBridge drops an event it cannot deliver (after its
                        # retries, or at once for a permission or not-found error). The
                        # consumer's own dead-letter queue: make dlq lists what is there, and
                        # make dlq-replay sends it to the queue, as the rule would have.
                        "DeadLetterConfig": {"Arn": _arn(sub.dead_letter_queue)},
                        "RetryPolicy": {
                            "MaximumRetryAttempts": RULE_RETRY_ATTEMPTS,
                            "MaximumEventAgeInSeconds": RULE_EVENT_AGE_SECONDS,
                        },
                    }
                ],
            },
        },
        # EventBridge may send to the queue only on behalf of this one rule: no other rule, bus
        # or account can put messages in it.
        queue_policy_id(sub.queue): _rule_may_send(sub.queue, sub.rule, "OwnRuleOnly"),
        # The same rule, and only it, may dead-letter into the dead-letter queue (SQS's redrive
        # needs no policy).
        queue_policy_id(sub.dead_letter_queue): _rule_may_send(
            sub.dead_letter_queue, sub.rule, "OwnRuleDeadLettersOnly"
        ),
        events_policy_id(sub.handler): _events_policy(service, sub.handler, statements),
    }


def service_fragment(service: ServiceDef, stage: str) -> dict[str, Any]:
    """The service's relays and subscriptions as a fragment to merge over Chalice's template.

    Empty for a service with neither (the gateway). The bus's name reaches every function of
    the service (``tools.package`` gives them all the same environment), the processed-events
    table's name too when the service consumes events.
    """
    relays = topology.relays_of(service)
    subscriptions = topology.subscriptions_of(service)
    if not relays and not subscriptions:
        return {}
    parameters: dict[str, Any] = {
        BUS_NAME_PARAMETER: {
            "Type": "String",
            "Description": "The stage's event bus (the bus stack's output; set by tools/deploy.py)",
        }
    }
    shared = {events.BUS_SETTING: _ref(BUS_NAME_PARAMETER)}
    resources: dict[str, Any] = {}
    if relays:
        parameters[BUS_ARN_PARAMETER] = {
            "Type": "String",
            "Description": "The stage's event bus ARN, which the relays may publish to",
        }
    for relay in relays:
        resources.update(_relay(service, stage, relay))
    if subscriptions:
        resources.update(topology.generated_tables(service))
        shared[events.PROCESSED_TABLE_SETTING] = _ref(topology.PROCESSED_EVENTS_TABLE)
    for sub in subscriptions:
        resources.update(_subscription(service, stage, sub))
    # On the API function too: tools.package copies its variables to every function, so no
    # function keeps config.json's "set-by-deploy" for these.
    resources[API_FUNCTION] = {"Properties": {"Environment": {"Variables": shared}}}
    return {"Parameters": parameters, "Resources": resources}
