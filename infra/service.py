"""A service's stack: its ``chalice package`` template taken in with ``CfnInclude`` (functions,
REST API, roles, ``resources.json``'s tables and policies; logical ids kept), its zip an
``Asset``, its events (``infra/events.py``). Added here, for what ``chalice package`` lacks:

* functions named after the stack, so ``.chalice/policy-<stage>*.json`` grants logs on each
  one's own log group alone; that group, whose retention goes with the stack (Chalice's
  ``log_retention_in_days`` breaks an ``Fn::Sub``, aws/chalice#2079);
* each role's X-Ray permission (SAM adds it only to roles it makes);
* every function given the API function's wired environment (Chalice gives all the same
  ``set-by-deploy`` values), ``STAGE`` (tokens name their stage), the JWKS, the bus;
* the REST API traced (left unset, aws/chalice#1753), named after the stack (its metrics are
  keyed by name), throttled (the contract's 429), API Gateway's errors in the contract's shape.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import Fn, RemovalPolicy, Stack, aws_dynamodb, aws_lambda, aws_sam
from aws_cdk import aws_iam as iam
from chalice.utils import to_cfn_resource_name
from constructs import Construct

from infra import events
from infra.gateway_responses import GATEWAY_RESPONSES
from infra.packaging import API_FUNCTION, PackagedApp, content_hash, function_id, function_suffix
from svckit import events as svc_events
from svckit.tokens import STAGE_SETTING
from tools import topology
from tools.services import ServiceDef
from tools.stages import JWKS_VERSION_CONTEXT, Naming

JWKS_SETTING = "JWT_JWKS"
SIGNING_KEY_PARAMETER = "SigningKeySecretArn"  # user_api's resources.json; set by infra/deploy.py
# What a traced function needs (Lambda's X-Ray docs): these two take no resource but "*".
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
REST_API, API_ROLE = "RestAPI", "ApiHandlerRole"  # Chalice's logical ids
THROTTLING = {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100}  # the stage's: then 429
# cdk-nag's rendering of a function's own log group ARN (.chalice/policy-<stage>*.json).
OWN_LOG_GROUP_FINDING = (
    "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
    "/aws/lambda/<AWS::StackName>{suffix}:*"
)


class ServiceStack(Stack):
    """``shop-<stage>-<service>``; ``upstream_urls`` fill the gateway's ``<Service>Url``
    parameters. The observability stack watches the dicts of CDK objects below."""

    def __init__(
        self, scope: Construct, service: ServiceDef, stage: str, packaged: PackagedApp, *,
        bus: events.EventsStack | None = None, upstream_urls: dict[ServiceDef, str] | None = None,
    ) -> None:  # fmt: skip
        name = Naming(stage).stack(service)
        super().__init__(scope, name, stack_name=name)
        self.add_transform("AWS::Serverless-2016-10-31")
        self.service, self.stage = service, stage
        app = Construct(self, "App")
        urls = {to_cfn_resource_name(s.name) + "Url": u for s, u in (upstream_urls or {}).items()}
        template = str(packaged.template_path)
        self.template = cdk.cloudformation_include.CfnInclude(
            app, "Template", template_file=template, parameters=urls)  # fmt: skip
        path = packaged.zip_path
        code = cdk.aws_s3_assets.Asset(app, "Code", path=str(path), asset_hash=content_hash(path))
        location = aws_sam.CfnFunction.S3LocationProperty(
            bucket=code.s3_bucket_name, key=code.s3_object_key)  # fmt: skip
        for logical_id, resource in packaged.template()["Resources"].items():
            if resource["Type"] == "AWS::Serverless::Function":
                self.resource(logical_id).code_uri = location
        self.rest_api_id: str = self.resource(REST_API).ref
        self.functions: dict[str, aws_lambda.IFunction] = {}
        self.tables: dict[str, aws_dynamodb.ITable] = {}
        self.queues: dict[str, cdk.aws_sqs.IQueue] = {}
        self.dead_letter_queues: dict[str, cdk.aws_sqs.IQueue] = {}
        self.rules: dict[str, cdk.aws_events.IRule] = {}
        for logical_id in service.tables():
            table = self.resource(logical_id)
            stream = table.attr_stream_arn if table.stream_specification else None
            self.tables[logical_id] = aws_dynamodb.Table.from_table_attributes(
                self, f"{logical_id}Ref", table_name=table.ref, table_stream_arn=stream)
            recovery = table.point_in_time_recovery_specification
            if not getattr(recovery, "point_in_time_recovery_enabled", False):
                events.acknowledge(
                    table, "AwsSolutions-DDB3", "resources.json switches point-in-time recovery "
                    "off for this table on purpose: its items expire by TTL (login-attempt "
                    "counters, processed-event records), so a restore would bring back nothing "
                    "worth its cost")  # fmt: skip
        shared = self._shared_environment(bus)
        for relay in topology.relays_of(service):  # bus: asserted by _shared_environment
            events.relay(self, relay, bus.bus_arn)  # type: ignore[union-attr]
        for sub in topology.subscriptions_of(service):
            events.subscribe(self, sub, bus.bus_name)  # type: ignore[union-attr]
        self._configure_function(API_FUNCTION, "", shared)
        for h in [*topology.relays_of(service), *topology.subscriptions_of(service)]:
            self._configure_function(function_id(h.handler), function_suffix(h.handler), shared)
        api = self.resource(REST_API)
        api.name, api.tracing_enabled = self.stack_name, True
        api.method_settings = [{"ResourcePath": "/*", "HttpMethod": "*", **THROTTLING}]
        # Also the Swagger body's title, which API Gateway reads a name from on import.
        api.add_property_override("DefinitionBody.info.title", self.stack_name)
        api.add_property_override(
            "DefinitionBody.x-amazon-apigateway-gateway-responses", GATEWAY_RESPONSES)  # fmt: skip
        if SIGNING_KEY_PARAMETER in packaged.template().get("Parameters", {}):
            events.acknowledge(
                self, "CloudFormation-Validate::W2509",
                f"{SIGNING_KEY_PARAMETER} is the secret's ARN, not the secret: echoing it "
                "shows no key material")  # fmt: skip

    def resource(self, logical_id: str) -> Any:  # the L1 construct: aws_sam.CfnFunction...
        return self.template.get_resource(logical_id)

    def role_of(self, logical_id: str) -> iam.CfnRole:
        """Chalice's ``ApiHandlerRole``, or ``<Function>Role`` (own ``iam_policy_file``)."""
        return self.resource(API_ROLE if logical_id == API_FUNCTION else f"{logical_id}Role")

    def _shared_environment(self, bus: events.EventsStack | None) -> dict[str, Any]:
        """Every function's environment over Chalice's: the API function's (resources.json's
        wiring), the public JWKS, the bus, the processed-events table, the stage."""
        env = self.resource(API_FUNCTION).environment
        # A dynamic reference to the JWKS's SSM version (infra/deploy.py passes the version it
        # made or found as -c jwksVersion): a rotation is a new version, so a changed template
        # and updated stacks; an unchanged JWKS, a no-op deploy. No function calls SSM.
        version = self.node.try_get_context(JWKS_VERSION_CONTEXT)
        jwks = Naming(self.stage).jwks_parameter + (f":{version}" if version else "")
        shared = dict(getattr(env, "variables", None) or {})
        shared[JWKS_SETTING] = f"{{{{resolve:ssm:{jwks}}}}}"
        if topology.relays_of(self.service) or topology.subscriptions_of(self.service):
            assert bus is not None, f"{self.service.name} has events but no bus"
            shared[svc_events.BUS_SETTING] = bus.bus_name
        if topology.subscriptions_of(self.service):
            table = self.resource(topology.PROCESSED_EVENTS_TABLE)
            shared[svc_events.PROCESSED_TABLE_SETTING] = table.ref
        shared[STAGE_SETTING] = self.stage
        return shared

    def _configure_function(self, logical_id: str, suffix: str, shared: dict[str, Any]) -> None:
        function = self.resource(logical_id)
        function.function_name = f"{self.stack_name}{suffix}"
        variables = {**(getattr(function.environment, "variables", None) or {}), **shared}
        function.environment = aws_sam.CfnFunction.FunctionEnvironmentProperty(variables=variables)
        log_group = cdk.aws_logs.LogGroup(
            self, f"{logical_id}LogGroup", log_group_name=Fn.sub(f"/aws/lambda/${{{logical_id}}}"),
            retention=cdk.aws_logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY,
        )  # fmt: skip
        events.keep_id(log_group, f"{logical_id}LogGroup")
        role = self.role_of(logical_id)
        tracing = iam.CfnPolicy(
            self, f"{logical_id}TracingPolicy", policy_name="send-traces", roles=[role.ref],
            policy_document=iam.PolicyDocument(statements=[iam.PolicyStatement(
                sid="SendTraces", actions=XRAY_ACTIONS, resources=["*"])]))  # fmt: skip
        tracing.override_logical_id(f"{logical_id}TracingPolicy")
        events.acknowledge(
            tracing, "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords take no resource but '*'",
        )  # fmt: skip
        events.acknowledge(
            role, f"AwsSolutions-IAM5[Resource::{OWN_LOG_GROUP_FINDING.format(suffix=suffix)}]",
            "The function's own log group (.chalice/policy-<stage>*.json): ':*' is its log "
            "streams, which Lambda names at run time")  # fmt: skip
        # Lambda checks the role when it makes an event source mapping and at the first run:
        # the function waits for every policy attached to its role.
        own_role = [self.resolve(role.ref)]
        for policy in self.node.find_all():
            if isinstance(policy, iam.CfnPolicy) and self.resolve(policy.roles) == own_role:
                function.add_resource_dependency(policy)
        self.functions[logical_id] = aws_lambda.Function.from_function_name(
            self, f"{logical_id}Ref", function.function_name
        )
