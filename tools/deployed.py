"""A stage deployed to LocalStack with the project's own make targets, and the host-mode
LocalStack controller: what the end-to-end layer (tests/localstack/e2e) and the LocalStack bench
(tools/bench_localstack.py) both drive.

The deploy and destroy run as a user runs them (``make deploy-localstack`` /
``make destroy-localstack``, in a child process with LocalStack's endpoint), so the layer proves
the commands, not a Python shortcut beside them. What the tests look at afterwards they read from
LocalStack with boto3: the gateway's REST API id from its stack, the queues, what is left.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3

from tools import topology
from tools.services import GATEWAY, ROOT, SERVICES

STAGE = "dev"  # a stage of every config.json, on the test's own LocalStack
REGION = "us-east-1"
DEPLOY_TIMEOUT = 600  # seconds; a deploy on LocalStack takes about a minute here
API_STAGE = "api"  # Chalice's api_gateway_stage in every config.json
LSCTL = ROOT / "localstack" / "host" / "lsctl.py"


def load_lsctl() -> ModuleType:
    """``localstack/host/lsctl.py`` as a module, loaded by path: the repository's
    ``localstack/`` folder is no package (and LocalStack's own would shadow it by name)."""
    if "lsctl" in sys.modules:
        return sys.modules["lsctl"]
    spec = importlib.util.spec_from_file_location("lsctl", LSCTL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lsctl"] = module
    spec.loader.exec_module(module)
    return module


def localstack_env(endpoint: str) -> dict[str, str]:
    """The environment a deploy against LocalStack runs with: its endpoint for every client,
    its documented dummy credentials, nothing of a developer's own AWS profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",  # noqa: S106 - LocalStack's documented dummy secret
        AWS_DEFAULT_REGION=REGION,
        STAGE=STAGE,
    )
    return env


@dataclass
class Deployed:
    """A stage on LocalStack and the ways the tests look at it."""

    endpoint: str
    stage: str = STAGE
    walker: str = field(default_factory=lambda: f"walker_{uuid.uuid4().hex[:8]}")
    product_id: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:8]}")
    gateway_url: str = ""
    api_ids: dict[str, str] = field(default_factory=dict)  # each app's REST API, by service
    deploys: int = 0

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 - LocalStack's documented dummy secret
        )

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def prefix(self) -> str:
        return f"{topology.PROJECT}-{self.stage}"

    def _make(self, target: str) -> None:
        result = subprocess.run(
            ["make", "--no-print-directory", target, f"STAGE={self.stage}"],
            cwd=ROOT,
            env=localstack_env(self.endpoint),
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT,
            check=False,
        )
        sys.stdout.write(result.stdout[-4000:])
        failed = f"make {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, failed

    def deploy(self) -> None:
        self._make("deploy-localstack")
        self.deploys += 1
        self.api_ids = {service.name: self.api_id(service.name) for service in SERVICES}
        self.gateway_url = self.api_urls[GATEWAY.name]

    @property
    def api_urls(self) -> dict[str, str]:
        """Each app's stage URL by service name, the gateway's too (``gateway_url``): the
        services are reached directly the way the gateway's settings name them."""
        return {name: self.stage_url(api) for name, api in self.api_ids.items()}

    def destroy(self) -> None:
        self._make("destroy-localstack")

    def api_id(self, service: str) -> str:
        """The REST API id of ``service``'s stack (``user_api``, ``gateway_api``, ...)."""
        stack = f"{self.prefix}-{service.replace('_', '-')}"
        resources = self.client("cloudformation").describe_stack_resources(StackName=stack)
        apis = [
            r["PhysicalResourceId"]
            for r in resources["StackResources"]
            if r["ResourceType"] == "AWS::ApiGateway::RestApi"
        ]
        assert len(apis) == 1, resources["StackResources"]
        return str(apis[0])

    def stage_url(self, api_id: str) -> str:
        """A REST API's stage in the path form LocalStack serves without DNS (the form
        ``infra.app.service_url`` gives the gateway for the services), no trailing slash."""
        return f"{self.endpoint}/_aws/execute-api/{api_id}/{API_STAGE}"

    def host_style(self, api_id: str) -> tuple[str, str]:
        """The same stage in LocalStack's host form, ``<id>.execute-api.localhost.localstack
        .cloud:<port>``, as (the URL to connect to, the Host header to send): that name does
        not resolve offline, so the request goes to the endpoint with the name as Host."""
        port = self.endpoint.rsplit(":", 1)[1]
        host = f"{api_id}.execute-api.localhost.localstack.cloud:{port}"
        return f"{self.endpoint}/{API_STAGE}", host

    def stacks(self) -> list[dict[str, Any]]:
        cfn = self.client("cloudformation")
        found = []
        for page in cfn.get_paginator("describe_stacks").paginate():
            found += [s for s in page["Stacks"] if s["StackName"].startswith(self.prefix + "-")]
        return [s for s in found if s["StackStatus"] != "DELETE_COMPLETE"]

    def stack_states(self) -> dict[str, Any]:
        """What a no-op deploy must leave alone: each stack's status and how many events it has
        (an update adds some; LocalStack keeps LastUpdatedTime at the creation time), and each
        function's revision (a code or configuration update gives a new one)."""
        cfn, lambda_ = self.client("cloudformation"), self.client("lambda")
        states: dict[str, Any] = {}
        for stack in self.stacks():
            name = stack["StackName"]
            events = [
                e
                for page in cfn.get_paginator("describe_stack_events").paginate(StackName=name)
                for e in page["StackEvents"]
            ]
            states[name] = (stack["StackStatus"], len(events))
        for function in self.functions():
            states[function] = lambda_.get_function(FunctionName=function)["Configuration"][
                "RevisionId"
            ]
        return states

    def functions(self) -> list[str]:
        return [
            f["FunctionName"]
            for page in self.client("lambda").get_paginator("list_functions").paginate()
            for f in page["Functions"]
            if f["FunctionName"].startswith(self.prefix + "-")
        ]

    def queue_depths(self) -> dict[str, int]:
        """Each consumer queue's messages, visible and in flight: what is still to be applied."""
        depths = {}
        for sub in topology.SUBSCRIPTIONS:
            url = self.sqs.get_queue_url(QueueName=sub.queue_name(self.stage))["QueueUrl"]
            counts = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            depths[sub.queue_name(self.stage)] = sum(int(v) for v in counts.values())
        return depths

    def leftovers(self) -> dict[str, list[str]]:
        """Everything of the stage still on LocalStack, by kind; empty when it is all gone."""
        mine, client = self.prefix, self.client
        function_arn = f":function:{mine}-"
        found: dict[str, list[str]] = {
            "stacks": [s["StackName"] for s in self.stacks()],
            "functions": self.functions(),
            "event source mappings": [
                m["UUID"]
                for m in client("lambda").list_event_source_mappings()["EventSourceMappings"]
                if function_arn in m["FunctionArn"]
            ],
            "tables": [
                t
                for t in client("dynamodb").list_tables()["TableNames"]
                if t.startswith(mine + "-")
            ],
            "queues": self.sqs.list_queues(QueueNamePrefix=mine + "-").get("QueueUrls", []),
            "apis": [
                a["name"]
                for a in client("apigateway").get_rest_apis(limit=500)["items"]
                if a["name"].startswith(mine + "-")
            ],
            "buses": [
                b["Name"] for b in client("events").list_event_buses(NamePrefix=mine)["EventBuses"]
            ],
            "rules": [r["Name"] for r in client("events").list_rules(NamePrefix=mine)["Rules"]],
            "buckets": [
                b["Name"]
                for b in client("s3").list_buckets().get("Buckets", [])
                if f"-{self.stage}-" in b["Name"] or b["Name"].startswith(mine)
            ],
            "roles": [
                r["RoleName"]
                for r in client("iam").list_roles()["Roles"]
                if r["RoleName"].startswith(mine + "-")
            ],
            "alarms": [
                a["AlarmName"]
                for a in client("cloudwatch").describe_alarms(AlarmNamePrefix=mine)["MetricAlarms"]
            ],
            "dashboards": [
                d["DashboardName"]
                for d in client("cloudwatch").list_dashboards(DashboardNamePrefix=mine)[
                    "DashboardEntries"
                ]
            ],
            "topics": [
                t["TopicArn"]
                for t in client("sns").list_topics()["Topics"]
                if t["TopicArn"].rsplit(":", 1)[-1].startswith(mine + "-")
            ],
            "log groups": [
                g["logGroupName"]
                for g in client("logs").describe_log_groups(
                    logGroupNamePrefix=f"/aws/lambda/{mine}-"
                )["logGroups"]
            ],
            "secrets": [
                s["Name"]
                for s in client("secretsmanager").list_secrets()["SecretList"]
                if s["Name"].startswith(f"{topology.PROJECT}/{self.stage}/")
            ],
            "parameters": [
                p["Name"]
                for p in client("ssm").describe_parameters(
                    ParameterFilters=[
                        {
                            "Key": "Name",
                            "Option": "BeginsWith",
                            "Values": [f"/{topology.PROJECT}/{self.stage}/"],
                        }
                    ]
                )["Parameters"]
            ],
        }
        return {kind: names for kind, names in found.items() if names}
