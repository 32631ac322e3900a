"""One service's stack: its Chalice app (functions, REST API, roles), its tables and policies
from ``resources.json``, and its share of the events from ``tools/topology.py``.

What ``chalice package`` cannot express is added here, each for a reason:

* every function named after its stack (plus ``-relay-user-changes`` etc.), which is what lets
  ``.chalice/policy-<stage>*.json`` grant logs on that function's own log group alone, and a log
  group of its own with a retention that goes with the stack (not Chalice's
  ``log_retention_in_days``, which breaks an ``Fn::Sub``, aws/chalice#2079);
* each role's X-Ray permission: ``"xray": true`` switches tracing on, but SAM adds its X-Ray
  policy only to roles it makes, and Chalice's roles are the template's own;
* every function given the API function's wired environment (Chalice gives them all the same
  ``set-by-deploy`` values), the stage being deployed as ``STAGE`` (tokens name their stage),
  the public JWKS from SSM, the bus's name;
* the REST API traced and named after its stack (``chalice package`` leaves tracing unset,
  aws/chalice#1753, and names the API after the app, while its metrics are keyed by name),
  throttled for the contract's 429, and API Gateway's own errors in the contract's shape.

The resources the observability stack monitors are attributes: ``functions``, ``tables``,
``queues``, ``dead_letter_queues``, ``rules``, ``rest_api_name``.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import (
    Acknowledgment,
    CfnParameter,
    Fn,
    RemovalPolicy,
    Stack,
    Validations,
    aws_dynamodb,
    aws_events,
    aws_iam,
    aws_lambda,
    aws_logs,
    aws_sam,
    aws_sqs,
)
from constructs import Construct

from infra import events, naming
from infra.chalice_app import ChaliceApp
from infra.gateway_responses import GATEWAY_RESPONSES
from infra.packaging import PackagedApp
from svckit import events as svc_events
from svckit.tokens import STAGE_SETTING
from tools import topology
from tools.services import ServiceDef

JWKS_SETTING = "JWT_JWKS"
SIGNING_KEY_PARAMETER = "SigningKeySecretArn"  # user_api's resources.json; set by infra/deploy.py
# What a traced function needs to send its segments (Lambda's X-Ray docs): these two take no
# resource but "*".
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


# cdk-nag's rendering of a function's own log group ARN (.chalice/policy-<stage>*.json).
OWN_LOG_GROUP_FINDING = (
    "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
    "/aws/lambda/<AWS::StackName>{suffix}:*"
)


def _acknowledge(construct: Construct, finding: str, reason: str) -> None:
    """A cdk-nag finding acknowledged on ``construct`` alone, with why it is right here."""
    Validations.of(construct).acknowledge(Acknowledgment(id=finding, reason=reason))


class ServiceStack(Stack):
    """``shop-<stage>-<service>``: everything one service owns."""

    def __init__(
        self,
        scope: Construct,
        service: ServiceDef,
        stage: str,
        packaged: PackagedApp,
        *,
        bus: events.EventsStack | None = None,
        upstream_urls: dict[ServiceDef, str] | None = None,
        **kwargs: Any,
    ) -> None:
        name = naming.service_stack_name(service, stage)
        super().__init__(scope, name, stack_name=name, **kwargs)
        self.add_transform(naming.SAM_TRANSFORM)
        self.service = service
        self.stage = stage
        parameters = {naming.url_parameter(s): url for s, url in (upstream_urls or {}).items()}
        self.app = ChaliceApp(self, "App", packaged, parameters=parameters)
        self.rest_api_name: str = name
        self.rest_api_id: str = self.app.rest_api(naming.REST_API).ref
        self.functions: dict[str, aws_lambda.IFunction] = {}
        self.tables: dict[str, aws_dynamodb.ITable] = {}
        self.queues: dict[str, aws_sqs.IQueue] = {}
        self.dead_letter_queues: dict[str, aws_sqs.IQueue] = {}
        self.rules: dict[str, aws_events.IRule] = {}
        self._expose_tables()
        shared = self._shared_environment(bus)
        self._wire_events(bus)
        for logical_id, suffix in self.function_suffixes().items():
            self._configure_function(logical_id, suffix, shared)
        self._configure_api()
        if SIGNING_KEY_PARAMETER in packaged.template().get("Parameters", {}):
            _acknowledge(
                self, "CloudFormation-Validate::W2509",
                f"{SIGNING_KEY_PARAMETER} is the secret's ARN, not the secret: echoing it "
                "shows no key material",
            )  # fmt: skip

    # -- what the stack holds ------------------------------------------------------------------

    def function_suffixes(self) -> dict[str, str]:
        """Every function: logical id -> what follows the stack's name in its name."""
        found = {naming.API_FUNCTION: ""}
        handlers = [r.handler for r in topology.relays_of(self.service)]
        handlers += [s.handler for s in topology.subscriptions_of(self.service)]
        for handler in handlers:
            found[naming.function_id(handler)] = naming.function_suffix(handler)
        return found

    def role_of(self, logical_id: str) -> aws_iam.CfnRole:
        """Chalice's role of a function: ``ApiHandlerRole``, or ``<Function>Role`` for one with
        its own ``iam_policy_file``."""
        if logical_id == naming.API_FUNCTION:
            return self.app.role(naming.API_ROLE)
        return self.app.role(f"{logical_id}Role")

    def _expose_tables(self) -> None:
        for logical_id in self.service.tables():
            cfn = self.app.table(logical_id)
            self.tables[logical_id] = aws_dynamodb.Table.from_table_attributes(
                self, f"{logical_id}Ref", table_name=cfn.ref,
                table_stream_arn=cfn.attr_stream_arn if cfn.stream_specification else None,
            )  # fmt: skip
            recovery = cfn.point_in_time_recovery_specification
            if not getattr(recovery, "point_in_time_recovery_enabled", False):
                _acknowledge(
                    cfn, "AwsSolutions-DDB3",
                    "resources.json switches point-in-time recovery off for this table on "
                    "purpose: its items expire by TTL (login-attempt counters, processed-event "
                    "records), so a restore would bring back nothing worth its cost",
                )  # fmt: skip

    # -- events --------------------------------------------------------------------------------

    def _shared_environment(self, bus: events.EventsStack | None) -> dict[str, Any]:
        """What every function's environment gets over Chalice's: the API function's wiring
        from resources.json, the public JWKS, the bus, the processed-events table, the stage."""
        api = self.app.function(naming.API_FUNCTION)
        env = api.environment
        own = dict(getattr(env, "variables", None) or {})
        jwks = CfnParameter(
            self, "JwksParameterName", type="AWS::SSM::Parameter::Value<String>",
            default=naming.Naming(self.stage).jwks_parameter,
            # "[cdk:skip]": without it the CDK CLI redeploys every stack with an SSM-typed
            # parameter on every deploy (it cannot know the value changed); infra/deploy.py
            # forces the deploy itself when the JWKS's version moved.
            description="SSM parameter with the public JWKS (made by infra/deploy.py first); "
            "CloudFormation resolves it at each deploy, so no function calls SSM [cdk:skip]",
        )  # fmt: skip
        shared: dict[str, Any] = {**own, JWKS_SETTING: jwks.value_as_string}
        if topology.relays_of(self.service) or topology.subscriptions_of(self.service):
            assert bus is not None, f"{self.service.name} has events but no bus"
            shared[svc_events.BUS_SETTING] = bus.bus_name
        if topology.subscriptions_of(self.service):
            shared[svc_events.PROCESSED_TABLE_SETTING] = self.app.table(
                topology.PROCESSED_EVENTS_TABLE
            ).ref
        shared[STAGE_SETTING] = self.stage
        return shared

    def _wire_events(self, bus: events.EventsStack | None) -> None:
        stage = self.stage
        for relay in topology.relays_of(self.service):
            assert bus is not None
            fn_id = naming.function_id(relay.handler)
            wired = events.Relay(
                self, relay, stage, self.app.function(fn_id), self.role_of(fn_id),
                self.app.table(relay.table), bus.bus_arn,
            )  # fmt: skip
            self.dead_letter_queues[relay.failure_queue] = wired.failure_queue
        for sub in topology.subscriptions_of(self.service):
            assert bus is not None
            fn_id = naming.function_id(sub.handler)
            function = self.app.function(fn_id)
            reserved = function.reserved_concurrent_executions
            wired_sub = events.Subscription(
                self, sub, stage, function, self.role_of(fn_id),
                self.app.table(topology.PROCESSED_EVENTS_TABLE), bus.bus_name,
                int(reserved) if reserved is not None else None,
            )  # fmt: skip
            self.queues[sub.queue] = wired_sub.queue
            self.dead_letter_queues[sub.dead_letter_queue] = wired_sub.dead_letter_queue
            self.rules[sub.rule] = wired_sub.rule

    # -- functions and API ---------------------------------------------------------------------

    def _configure_function(self, logical_id: str, suffix: str, shared: dict[str, Any]) -> None:
        function = self.app.function(logical_id)
        function_name = f"{self.stack_name}{suffix}"
        function.function_name = function_name
        own = dict(getattr(function.environment, "variables", None) or {})
        function.environment = aws_sam.CfnFunction.FunctionEnvironmentProperty(
            variables={**own, **shared}
        )
        log_group = aws_logs.LogGroup(
            self, f"{logical_id}LogGroup",
            log_group_name=Fn.sub(f"/aws/lambda/${{{logical_id}}}"),
            retention=naming.LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY,
        )  # fmt: skip
        events._keep_id(log_group, f"{logical_id}LogGroup")
        role = self.role_of(logical_id)
        tracing = aws_iam.CfnPolicy(
            self, f"{logical_id}TracingPolicy", policy_name="send-traces", roles=[role.ref],
            policy_document=aws_iam.PolicyDocument(statements=[aws_iam.PolicyStatement(
                sid="SendTraces", actions=XRAY_ACTIONS, resources=["*"],
            )]),
        )  # fmt: skip
        tracing.override_logical_id(f"{logical_id}TracingPolicy")
        _acknowledge(
            tracing, "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords take no resource but '*'",
        )  # fmt: skip
        _acknowledge(
            role, f"AwsSolutions-IAM5[Resource::{OWN_LOG_GROUP_FINDING.format(suffix=suffix)}]",
            "The function's own log group (.chalice/policy-<stage>*.json): ':*' is its log "
            "streams, which Lambda names at run time",
        )  # fmt: skip
        # Lambda checks the role when it makes an event source mapping and at the first run:
        # the function waits for every policy attached to its role.
        for policy in self.node.find_all():
            if isinstance(policy, aws_iam.CfnPolicy) and self.resolve(policy.roles) == [
                self.resolve(role.ref)
            ]:
                function.add_resource_dependency(policy)
        self.functions[logical_id] = aws_lambda.Function.from_function_name(
            self, f"{logical_id}Ref", function_name
        )

    def _configure_api(self) -> None:
        api = self.app.rest_api(naming.REST_API)
        api.name = self.stack_name
        api.tracing_enabled = True
        api.method_settings = [
            {
                "ResourcePath": "/*",
                "HttpMethod": "*",
                "ThrottlingRateLimit": naming.THROTTLING_RATE_LIMIT,
                "ThrottlingBurstLimit": naming.THROTTLING_BURST_LIMIT,
            }
        ]
        # Also the Swagger body's title, which API Gateway reads a name from on import.
        api.add_property_override("DefinitionBody.info.title", self.stack_name)
        api.add_property_override(
            "DefinitionBody.x-amazon-apigateway-gateway-responses",
            GATEWAY_RESPONSES,
        )
