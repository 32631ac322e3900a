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
* ``AWS::Serverless::Api`` -> a bare ``AWS::ApiGateway::RestApi``: its ``Ref`` is a real API id
  for the ``EndpointURL`` output, but the Swagger 2.0 body is not imported (moto's import takes
  only OpenAPI 3), so routes, gateway responses and stage throttling are checked on the template
  instead (test_templates.py), not in moto.

Two things moto's CloudFormation cannot take as AWS does, changed here and checked on the
template instead:

* ``AWS::SQS::QueuePolicy`` is not implemented (moto skips it, and then lists a resource without
  a logical id), so it is left out; which rule may send to which queue is asserted on the
  template (test_templates.py).
* ``AWS::Events::Archive`` takes its ``EventPattern`` only as a JSON string in moto (AWS takes
  the object the template holds), so it is sent as one.

Everything else (the tables and their streams, the queues and their redrive, the rules on the
bus, the data-access and events policies, the SSM-typed JWKS parameter, the log groups, the
outputs) goes to moto exactly as packaged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

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
            resource["Properties"] = {"Name": {"Fn::Sub": f"${{AWS::StackName}}-{logical_id}"}}
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
