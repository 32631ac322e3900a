"""A Chalice app in a CDK stack: the SAM template ``chalice package`` made
(``infra/packaging.py``) taken in with ``CfnInclude``, logical ids kept, and its zip as an
``Asset`` that every function's ``CodeUri`` points at. The stack must carry the SAM transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import aws_s3_assets, aws_sam
from aws_cdk import cloudformation_include as cfn_include
from constructs import Construct

from infra.packaging import PackagedApp, content_hash


class ChaliceApp(Construct):
    """``parameters`` replaces template parameters by values of the CDK app (another stack's
    URL, say); the others stay parameters of the stack."""

    def __init__(
        self, scope: Construct, construct_id: str, packaged: PackagedApp,
        parameters: Mapping[str, Any],
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        self.template = cfn_include.CfnInclude(
            self, "Template", template_file=str(packaged.template_path), parameters=dict(parameters)
        )
        path = packaged.zip_path
        code = aws_s3_assets.Asset(self, "Code", path=str(path), asset_hash=content_hash(path))
        for logical_id, resource in packaged.template()["Resources"].items():
            if resource["Type"] == "AWS::Serverless::Function":
                self.resource(logical_id).code_uri = aws_sam.CfnFunction.S3LocationProperty(
                    bucket=code.s3_bucket_name, key=code.s3_object_key
                )

    def resource(self, logical_id: str) -> Any:
        """The template's resource as its L1 construct (``aws_sam.CfnFunction``, ...)."""
        return self.template.get_resource(logical_id)
