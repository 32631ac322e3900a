"""A Chalice app in a CDK stack: the SAM template ``chalice package`` made
(``infra/packaging.py``) taken in with ``CfnInclude``, logical ids kept, and its zip as an
``Asset`` that every function's ``CodeUri`` points at. The stack must carry the SAM transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import aws_dynamodb, aws_iam, aws_s3_assets, aws_sam
from aws_cdk import cloudformation_include as cfn_include
from constructs import Construct

from infra.packaging import PackagedApp, content_hash


class ChaliceApp(Construct):
    """``parameters`` replaces template parameters by values of the CDK app (another stack's
    URL, say); the others stay parameters of the stack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        packaged: PackagedApp,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.packaged = packaged
        self.template = cfn_include.CfnInclude(
            self, "Template", template_file=str(packaged.template_path),
            parameters=dict(parameters or {}),
        )  # fmt: skip
        self.code = aws_s3_assets.Asset(
            self, "Code", path=str(packaged.zip_path), asset_hash=content_hash(packaged.zip_path)
        )
        raw = packaged.template()["Resources"]
        self.function_ids = sorted(
            k for k, v in raw.items() if v["Type"] == "AWS::Serverless::Function"
        )
        for logical_id in self.function_ids:
            self.function(logical_id).code_uri = aws_sam.CfnFunction.S3LocationProperty(
                bucket=self.code.s3_bucket_name, key=self.code.s3_object_key
            )

    def _resource(self, logical_id: str, kind: type[Any]) -> Any:
        resource = self.template.get_resource(logical_id)
        assert isinstance(resource, kind), logical_id
        return resource

    def function(self, logical_id: str) -> aws_sam.CfnFunction:
        return self._resource(logical_id, aws_sam.CfnFunction)

    def role(self, logical_id: str) -> aws_iam.CfnRole:
        return self._resource(logical_id, aws_iam.CfnRole)

    def rest_api(self, logical_id: str) -> aws_sam.CfnApi:
        return self._resource(logical_id, aws_sam.CfnApi)

    def table(self, logical_id: str) -> aws_dynamodb.CfnTable:
        return self._resource(logical_id, aws_dynamodb.CfnTable)
