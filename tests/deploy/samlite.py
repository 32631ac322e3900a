"""Just enough of the SAM transform for moto's CloudFormation to create the stacks.

moto implements no ``AWS::Serverless::*`` resource type (it skips them with a warning, and then
fails on whatever refers to them). CloudFormation on AWS and LocalStack run the real SAM
transform. For the orchestration tests, :class:`SamLiteStacks` sends moto the same template with
the two SAM resources Chalice emits replaced by the plain resources SAM would make of them:

* ``AWS::Serverless::Function`` -> ``AWS::Lambda::Function`` with the code at the S3 place the
  deploy uploaded it to (moto fetches it from its S3, so a wrong bucket or key fails the test),
  the same role, environment, runtime, memory, timeout and reserved concurrency.
* ``AWS::Serverless::Api`` -> a bare ``AWS::ApiGateway::RestApi``: its ``Ref`` is a real API id
  for the ``EndpointURL`` output, but the Swagger 2.0 body is not imported (moto's import takes
  only OpenAPI 3), so routes, gateway responses and stage throttling are checked on the template
  instead (test_templates.py), not in moto.

Everything else (the table, the data-access policy on the table's ARN, the SSM-typed JWKS
parameter, the log group, the outputs) goes to moto exactly as packaged.
"""

from __future__ import annotations

import copy
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


def desugar(template: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(template))
    result.pop("Transform", None)
    for logical_id, resource in result["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            code = props["CodeUri"]
            assert isinstance(code, dict), f"{logical_id}: CodeUri was not uploaded: {code!r}"
            resource["Type"] = "AWS::Lambda::Function"
            resource["Properties"] = {k: props[k] for k in _FUNCTION_PROPERTIES if k in props}
            resource["Properties"]["Code"] = {"S3Bucket": code["Bucket"], "S3Key": code["Key"]}
        elif resource["Type"] == "AWS::Serverless::Api":
            resource["Type"] = "AWS::ApiGateway::RestApi"
            resource["Properties"] = {"Name": {"Fn::Sub": f"${{AWS::StackName}}-{logical_id}"}}
    return result


class SamLiteStacks(Stacks):
    """The production call layer, with the template desugared just before it is sent."""

    def render(self, template: Mapping[str, Any]) -> dict[str, Any]:
        return desugar(template)
