"""Just enough of the SAM transform for moto's CloudFormation to create the stacks.

moto implements no ``AWS::Serverless::*`` resource type (it skips them with a warning, and then
fails on whatever refers to them). CloudFormation on AWS and LocalStack run the real SAM
transform. For the orchestration tests, :class:`SamLiteStacks` sends moto the same template with
the two SAM resources Chalice emits replaced by the plain resources SAM would make of them:

* ``AWS::Serverless::Function`` -> ``AWS::Lambda::Function`` with the code at the S3 place the
  deploy uploaded it to (moto fetches it from its S3, so a wrong bucket or key fails the test),
  the same role, environment, runtime, memory, timeout and reserved concurrency; and each of its
  SAM ``Events`` of type ``DynamoDB`` or ``SQS`` -> an ``AWS::Lambda::EventSourceMapping`` named
  as SAM names it (function id + event id), with the stream or queue as ``EventSourceArn``
  and every other property as SAM passes it on (the on-failure destination without SAM's own
  ``Type`` key). moto then checks that the stream or queue exists and keeps the mapping's
  retry, bisect, batch and destination settings, which the tests read back.
* ``AWS::Serverless::Api`` -> a bare ``AWS::ApiGateway::RestApi`` with the template's ``Name``
  (the stack's, which the observability stack's alarms name as ``ApiName``): its ``Ref`` is a
  real API id for the ``EndpointURL`` output, but the Swagger 2.0 body is not imported (moto's
  import takes only OpenAPI 3), so routes, gateway responses, stage throttling and the stage's
  X-Ray tracing are checked on the template instead (test_templates.py), not in moto.

Two things moto's CloudFormation cannot take as AWS does, changed here and checked on the
template instead:

* ``AWS::SQS::QueuePolicy`` is not implemented (moto skips it, and then lists a resource without
  a logical id), so it is left out; which rule may send to which queue is asserted on the
  template (test_templates.py).
* ``AWS::Events::Archive`` takes its ``EventPattern`` only as a JSON string in moto (AWS takes
  the object the template holds), so it is sent as one.

Three resource types of the observability stack moto's CloudFormation does not implement at
all; this module registers them with it (:class:`_Alarm`, :class:`_Subscription`,
:class:`_QueryDefinition`), each made by the service's own API on moto's backend once moto has
resolved the template's references, so the tests read back what CloudFormation would have made:

* ``AWS::CloudWatch::Alarm`` -> ``PutMetricAlarm`` with the properties as they are (the API's
  names are CloudFormation's), after botocore has validated them against the API's model; a
  parameter CloudFormation would give as a number (``Threshold`` from a ``Ref``) is converted.
* ``AWS::SNS::Subscription`` -> ``Subscribe``.
* ``AWS::Logs::QueryDefinition`` -> moto's Logs has no query definitions; the definition is kept
  here (:func:`query_definitions`) after checking that every log group it names exists when the
  stack creates it (which is what ordering the stacks must guarantee).

And moto's stack update ignores a resource's ``Condition`` (it updates a resource whose
condition turned false, and never creates one whose condition turned true): samlite makes it
delete and create such resources as CloudFormation does (:func:`_update_honouring_condition`),
which is what an update that adds or removes the alarm e-mail does.

Everything else (the tables and their streams, the queues and their redrive, the rules on the
bus, the data-access and events policies, the SSM-typed JWKS parameter, the log groups, the
SNS topic, the dashboard, the outputs) goes to moto exactly as packaged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.validate import validate_parameters
from moto.cloudformation import parsing
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.common_models import CloudFormationModel
from moto.logs.models import logs_backends

from tools.deploy import Stacks

_FUNCTION_PROPERTIES = (
    "FunctionName",
    "Handler",
    "Runtime",
    "Role",
    "Environment",
    "MemorySize",
    "Timeout",
    "ReservedConcurrentExecutions",
    "Architectures",
)


# SAM's event properties that are not the plain mapping's (the source's ARN is renamed).
_EVENT_SOURCE = {"DynamoDB": "Stream", "SQS": "Queue"}


def _event_source_mapping(function_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    props = copy.deepcopy(dict(event["Properties"]))
    source = props.pop(_EVENT_SOURCE[event["Type"]])
    on_failure = props.get("DestinationConfig", {}).get("OnFailure")
    if on_failure is not None:
        on_failure.pop("Type", None)  # SAM's hint for the policy it would add; not a property
    return {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {"FunctionName": {"Ref": function_id}, "EventSourceArn": source, **props},
    }


def desugar(template: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(template))
    result.pop("Transform", None)
    mappings: dict[str, Any] = {}
    for logical_id, resource in list(result["Resources"].items()):
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            code = props["CodeUri"]
            assert isinstance(code, dict), f"{logical_id}: CodeUri was not uploaded: {code!r}"
            resource["Type"] = "AWS::Lambda::Function"
            resource["Properties"] = {k: props[k] for k in _FUNCTION_PROPERTIES if k in props}
            resource["Properties"]["Code"] = {"S3Bucket": code["Bucket"], "S3Key": code["Key"]}
            for event_id, event in props.get("Events", {}).items():
                assert event["Type"] in _EVENT_SOURCE, f"{logical_id}: {event['Type']} event"
                mappings[logical_id + event_id] = _event_source_mapping(logical_id, event)
        elif resource["Type"] == "AWS::Serverless::Api":
            resource["Type"] = "AWS::ApiGateway::RestApi"
            resource["Properties"] = {"Name": props["Name"]}
        elif resource["Type"] == "AWS::SQS::QueuePolicy":
            del result["Resources"][logical_id]
        elif resource["Type"] == "AWS::Events::Archive" and "EventPattern" in props:
            props["EventPattern"] = json.dumps(props["EventPattern"])
    result["Resources"].update(mappings)
    return result


class SamLiteStacks(Stacks):
    """The production call layer, with the template desugared just before it is sent."""

    def render(self, template: Mapping[str, Any]) -> dict[str, Any]:
        return desugar(template)


# --- the observability stack's resource types, which moto's CloudFormation lacks ----------------


def _client(service: str, account_id: str, region_name: str) -> Any:
    """A client of moto's own API, from inside moto's handling of a stack: the request goes
    through the same mock, with its validation. moto maps the tests' credentials to its default
    account, the only one the orchestration tests deploy stacks in."""
    if account_id != DEFAULT_ACCOUNT_ID:
        raise NotImplementedError(f"samlite makes resources in account {DEFAULT_ACCOUNT_ID} only")
    return boto3.client(service, region_name=region_name)


_ALARM_INTEGERS = ("Period", "EvaluationPeriods", "DatapointsToAlarm")


def _alarm_request(properties: dict[str, Any]) -> dict[str, Any]:
    """PutMetricAlarm's parameters: CloudFormation's properties have the API's names; a number
    that came from a parameter is a string once moto resolved it, CloudFormation converts it."""
    request = copy.deepcopy(properties)
    if "Threshold" in request:
        request["Threshold"] = float(request["Threshold"])
    for key in _ALARM_INTEGERS:
        if key in request:
            request[key] = int(request[key])
    for query in request.get("Metrics", []):
        if "MetricStat" in query:
            query["MetricStat"]["Period"] = int(query["MetricStat"]["Period"])
    return request


class _ReplacedOnUpdate:
    """What the three resource types below share. CloudFormation replaces such a resource on an
    update (delete, then create); each type makes one from its properties (:meth:`_create`) and
    deletes one by its name (:meth:`_remove`: ``name``, which is also what moto passes as
    ``resource_name`` when it has only the name) with the service's calls. A mixin, not a
    subclass of ``CloudFormationModel``: moto finds its resource types among that class's direct
    subclasses only, so each type still names it as a base."""

    name: str
    _ATTRIBUTE: str  # the one attribute ``Fn::GetAtt`` may ask of it

    @classmethod
    def _create(
        cls, name: str, properties: dict[str, Any], account_id: str, region_name: str
    ) -> Any:
        raise NotImplementedError

    @classmethod
    def _remove(cls, name: str, account_id: str, region_name: str) -> None:
        raise NotImplementedError

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == cls._ATTRIBUTE

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        return cls._create(
            resource_name, cloudformation_json["Properties"], account_id, region_name
        )

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[misc]
        cls,
        original_resource: _ReplacedOnUpdate,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name
        )

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[misc]
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> None:
        cls._remove(resource_name, account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        self._remove(self.name, account_id, region_name)

    def is_created(self) -> bool:
        return True


class _Alarm(_ReplacedOnUpdate, CloudFormationModel):
    def __init__(self, name: str, account_id: str, region_name: str) -> None:
        self.name = name
        self.account_id = account_id
        self.region_name = region_name

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    _ATTRIBUTE = "Arn"

    @classmethod
    def _create(
        cls, name: str, properties: dict[str, Any], account_id: str, region_name: str
    ) -> _Alarm:
        client = _client("cloudwatch", account_id, region_name)
        request = _alarm_request({**properties, "AlarmName": name})
        model = client.meta.service_model.operation_model("PutMetricAlarm")
        validate_parameters(request, model.input_shape)
        client.put_metric_alarm(**request)
        return cls(name, account_id, region_name)

    @classmethod
    def _remove(cls, name: str, account_id: str, region_name: str) -> None:
        _client("cloudwatch", account_id, region_name).delete_alarms(AlarmNames=[name])

    @property
    def physical_resource_id(self) -> str:
        return self.name


class _Subscription(_ReplacedOnUpdate, CloudFormationModel):
    def __init__(self, arn: str) -> None:
        self.name = arn  # what deletes it, as for the other two

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::Subscription"

    _ATTRIBUTE = "Arn"

    @classmethod
    def _create(
        cls, name: str, properties: dict[str, Any], account_id: str, region_name: str
    ) -> _Subscription:
        answer = _client("sns", account_id, region_name).subscribe(
            TopicArn=properties["TopicArn"],
            Protocol=properties["Protocol"],
            Endpoint=properties["Endpoint"],
            ReturnSubscriptionArn=True,
        )
        return cls(answer["SubscriptionArn"])

    @classmethod
    def _remove(cls, name: str, account_id: str, region_name: str) -> None:
        _client("sns", account_id, region_name).unsubscribe(SubscriptionArn=name)

    @property
    def physical_resource_id(self) -> str:
        return self.name


def query_definitions(account_id: str, region_name: str) -> dict[str, dict[str, Any]]:
    """The saved Logs Insights queries the stacks made, by name (kept with moto's Logs backend,
    so a new mock starts with none)."""
    backend = logs_backends[account_id][region_name]
    if not hasattr(backend, "samlite_query_definitions"):
        backend.samlite_query_definitions = {}
    return backend.samlite_query_definitions  # type: ignore[no-any-return]


class _QueryDefinition(_ReplacedOnUpdate, CloudFormationModel):
    def __init__(self, definition_id: str, name: str) -> None:
        self.definition_id = definition_id
        self.name = name

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Logs::QueryDefinition"

    _ATTRIBUTE = "QueryDefinitionId"

    @classmethod
    def _create(
        cls, name: str, properties: dict[str, Any], account_id: str, region_name: str
    ) -> _QueryDefinition:
        props = copy.deepcopy(properties)
        logs = _client("logs", account_id, region_name)
        for group in props.get("LogGroupNames", []):
            found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
            if group not in [g["logGroupName"] for g in found]:
                raise ValueError(f"query definition {name}: no log group {group}")
        saved = query_definitions(account_id, region_name)
        saved[name] = props
        return cls(f"samlite-{len(saved)}", name)

    @classmethod
    def _remove(cls, name: str, account_id: str, region_name: str) -> None:
        query_definitions(account_id, region_name).pop(name, None)

    @property
    def physical_resource_id(self) -> str:
        return self.definition_id


_moto_update = parsing.parse_and_update_resource


def _update_honouring_condition(
    logical_id: str,
    resource_json: dict[str, Any],
    resources_map: Any,
    account_id: str,
    region_name: str,
) -> Any:
    """moto's update of one resource, with its ``Condition`` evaluated as CloudFormation does:
    a resource whose condition is now false is deleted, one whose condition became true is
    created, one without a condition is moto's business."""
    condition = resource_json.get("Condition")
    if condition is None:
        return _moto_update(logical_id, resource_json, resources_map, account_id, region_name)
    original = resources_map._parsed_resources.get(logical_id)
    if not resources_map.lazy_condition_map[condition]:
        if original is not None:
            resources_map._delete_resource(original, resource_json)
        return None
    if original is None:
        return parsing.parse_and_create_resource(
            logical_id, resource_json, resources_map, account_id, region_name
        )
    return _moto_update(logical_id, resource_json, resources_map, account_id, region_name)


parsing.parse_and_update_resource = _update_honouring_condition
# moto finds its resource types among CloudFormationModel's subclasses, once (cached).
parsing.get_model_map.cache_clear()
parsing.get_name_type_map.cache_clear()
