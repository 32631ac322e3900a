"""Each deployment.zip is complete: unpacked alone, it runs as Lambda would run it.

Every zip is extracted into an empty folder and driven in a fresh ``python -I -S`` whose
``sys.path`` holds only that folder and boto3 with its dependencies (what the Lambda runtime
provides; see ``tools.bench_package.RUNTIME_PACKAGES``). The child imports the template's handler
and answers API Gateway REST proxy events, with the function's environment taken from the
synthesized stack, each reference resolved to what CloudFormation would put there.

AWS is moto in server mode on a free local port (``AWS_ENDPOINT_URL``), holding tables created
from the template's own table definitions and the signing key as a Secrets Manager secret, so
user_api's login reads its key through the same ``secretsmanager:ARN`` reference it gets when
deployed, and an EventBridge bus with a rule that copies everything on it into a queue, where
the relays' events are read back.

The event functions are driven the same way, with the event shapes Lambda's mappings deliver
(``tests/support/lambda_events.py``): a DynamoDB stream batch for a relay (whose events must
reach the bus), an SQS batch of EventBridge events for a consumer (whose changes must reach the
tables its template names, once per event).

Not covered here, because it needs Docker or AWS: Lambda's own bootstrap (``awslambdaric``) and
its exact boto3/urllib3 versions, and API Gateway in front (its routing and gateway responses are
checked on the template in tests/infra; the LocalStack layer runs them for real).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.packaging import API_FUNCTION, SVCKIT_SOURCE, PackagedApp
from svckit import dynamo, events, keys
from svckit.tokens import TokenIssuer, TokenVerifier, audience_for, issuer_for
from tests.infra.conftest import STAGE, function_id, functions_of, handler_of
from tests.support import lambda_events as le
from tools.bench_package import run_isolated, unpack
from tools.services import GATEWAY, PRODUCT, SERVICES, USER
from tools.stages import Naming

pytestmark = pytest.mark.deploy

SERVICE_NAMES = [s.name for s in SERVICES]
BY_NAME = {s.name: s for s in SERVICES}
REGION = "us-east-1"
# What the Lambda runtime itself sets for every function, that code may look at to know it runs
# in Lambda (the function's name matches the child's context below).
LAMBDA_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_LAMBDA_FUNCTION_NAME": "fn",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
}  # fmt: skip

# Runs inside the isolated child: import the handler, answer each event, print the answers.
CHILD = """
import json, types
request = json.loads(sys.stdin.read())
module_name, _, attribute = request["handler"].partition(".")
module = __import__(module_name)
handler = getattr(module, attribute)
context = types.SimpleNamespace(
    function_name="fn", function_version="$LATEST", memory_limit_in_mb=512,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
    aws_request_id="req-1", log_group_name="/aws/lambda/fn", log_stream_name="s",
    get_remaining_time_in_millis=lambda: 10000,
)
answers = [handler(event, context) for event in request["events"]]
print("\\n=== answers ===")
print(json.dumps({"answers": answers, "paths": [p for p in sys.path]}))
"""


def proxy_event(
    method: str, resource: str, path: str | None = None, body: Any = None,
    headers: dict[str, str] | None = None, path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An API Gateway REST (v1) Lambda proxy event, as the ``api`` stage sends it."""
    path = path or resource
    all_headers = {"Host": "example.execute-api.us-east-1.amazonaws.com", **(headers or {})}
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    return {
        "resource": resource, "path": path, "httpMethod": method, "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters, "stageVariables": None,
        "requestContext": {
            "resourcePath": resource, "httpMethod": method, "path": f"/api{path}",
            "stage": "api", "requestId": "apigw-req-1", "identity": {"sourceIp": "203.0.113.9"},
        },
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }  # fmt: skip


def resolve(value: Any, refs: dict[str, str]) -> str:
    """What CloudFormation puts in an environment variable: ``Ref``, ``Fn::Sub`` and another
    stack's export (``Fn::ImportValue``, by the one name of ``refs`` its export name holds)."""
    if isinstance(value, str):  # a dynamic reference, {{resolve:ssm:NAME[:VERSION]}}, by NAME
        ssm = value.removeprefix("{{resolve:ssm:").removesuffix("}}")
        return refs[ssm.split(":")[0]] if ssm != value else value
    if set(value) == {"Ref"}:
        return refs[value["Ref"]]
    if set(value) == {"Fn::ImportValue"}:
        (found,) = [v for k, v in refs.items() if k in value["Fn::ImportValue"]]
        return found
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"]
        for name, resolved in refs.items():
            text = text.replace("${" + name + "}", resolved)
        assert "${" not in text, f"unresolved reference in {value}"
        return text
    raise AssertionError(f"unexpected intrinsic in the environment: {value}")


def function_env(
    template: dict[str, Any], refs: dict[str, str], logical_id: str = API_FUNCTION,
    given: dict[str, str] | None = None,
) -> dict[str, str]:  # fmt: skip
    """The function's environment in the stack, resolved; ``given`` sets variables outright."""
    variables = template["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
    given = given or {}
    return {k: given[k] if k in given else resolve(v, refs) for k, v in variables.items()}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _client(moto_server: str, service: str) -> Any:
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, endpoint_url=moto_server, region_name=REGION, **creds)


@pytest.fixture(scope="session")
def key_material() -> tuple[str, str]:
    return keys.new_key_material()


@pytest.fixture(scope="session")
def stage_aws(moto_server: str, key_material: tuple[str, str]) -> dict[str, str]:
    """The AWS side of a deployed stage, in moto: the signing-key secret, and the stage's bus as
    the bus stack's outputs give it to the service stacks."""
    secrets = _client(moto_server, "secretsmanager")
    name, pem = "shop/zipcheck/jwt-signing-key", key_material[0]
    arn = secrets.create_secret(Name=name, SecretString=pem)["ARN"]
    bus = _client(moto_server, "events").create_event_bus(Name="shop-zipcheck")["EventBusArn"]
    return {"SigningKeySecretArn": arn, Naming(STAGE).jwks_parameter: key_material[1],
            "EventBusName": "shop-zipcheck", "EventBusArn": bus}  # fmt: skip


def make_tables(moto_server: str, template: dict[str, Any], prefix: str) -> dict[str, str]:
    """Every table of the template, made in moto under ``<prefix>-<logical id>``; what each
    ``Ref`` to one resolves to."""
    dynamodb, made = _client(moto_server, "dynamodb"), {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props, name = resource["Properties"], f"{prefix}-{logical_id}"
        wanted = ("KeySchema", "AttributeDefinitions", "BillingMode", "GlobalSecondaryIndexes")
        dynamodb.create_table(TableName=name, **{k: props[k] for k in wanted if k in props})
        if "TimeToLiveSpecification" in props:
            ttl = props["TimeToLiveSpecification"]
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        made[logical_id] = name
    return made


def tap(moto_server: str, bus: str, source: str) -> str:
    """A queue that a rule on the bus fills with every event of ``source``; its URL."""
    sqs, events_client = _client(moto_server, "sqs"), _client(moto_server, "events")
    name = f"tap-{source.replace('.', '-')}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    pattern = json.dumps({"source": [source]})
    events_client.put_rule(Name=name, EventBusName=bus, EventPattern=pattern)
    target = {"Id": "tap", "Arn": attributes["Attributes"]["QueueArn"]}
    events_client.put_targets(Rule=name, EventBusName=bus, Targets=[target])
    return str(url)


@pytest.fixture(scope="session")
def task_dirs(
    packaged_apps: dict[str, PackagedApp], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    return {
        name: unpack(p.zip_path, tmp_path_factory.mktemp(f"task-{name}"))
        for name, p in packaged_apps.items()
    }


def invoke(
    name: str, task_dirs: dict[str, Path], lambda_runtime: Path, template: dict[str, Any],
    env: dict[str, str], events: list[dict[str, Any]], logical_id: str = API_FUNCTION,
) -> list[dict[str, Any]]:  # fmt: skip
    """Run ``events`` through the handler the template gives function ``logical_id``, from the
    unpacked zip, in one fresh interpreter."""
    handler = template["Resources"][logical_id]["Properties"]["Handler"]
    result = run_isolated(
        CHILD, task_dirs[name], lambda_runtime, {**LAMBDA_ENVIRONMENT, **env},
        stdin=json.dumps({"handler": handler, "events": events}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(result.stdout.split("=== answers ===", 1)[1])
    # Nothing but the task folder, the runtime stand-in and the standard library was importable.
    extra = [p for p in payload["paths"]
             if "site-packages" in p and not p.startswith(str(lambda_runtime))]  # fmt: skip
    assert extra == [], extra
    return list(payload["answers"])


def body(answer: dict[str, Any]) -> Any:
    return json.loads(answer["body"])


def refused(answer: dict[str, Any]) -> bool:
    """The contract's 401: ``{"Code": "UnauthorizedError", "Message": ...}`` and nothing else."""
    shape = set(body(answer)) == {"Code", "Message"}
    return answer["statusCode"] == 401 and shape and body(answer)["Code"] == "UnauthorizedError"


# One of a service's functions answering a list of events: (logical id, events) -> answers.
Run = Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]


@pytest.fixture
def zip_functions(
    moto_server: str, stage_aws: dict[str, str], templates: dict[str, dict[str, Any]],
    task_dirs: dict[str, Path], lambda_runtime: Path,
) -> Callable[[str, str], tuple[dict[str, str], Run]]:  # fmt: skip
    """For a service and a table prefix: its tables, made in moto under that prefix, and a way
    to run any of its functions from the unpacked zip with the environment its template gives
    that function (against moto)."""

    def start(name: str, prefix: str) -> tuple[dict[str, str], Run]:
        template = templates[name]
        tables = make_tables(moto_server, template, prefix)

        def run(logical_id: str, events_in: list[dict[str, Any]]) -> list[dict[str, Any]]:
            env = function_env(template, {**tables, **stage_aws}, logical_id)
            env["AWS_ENDPOINT_URL"] = moto_server
            return invoke(name, task_dirs, lambda_runtime, template, env, events_in, logical_id)

        return tables, run

    return start


def relay_insert(
    moto_server: str, bus: str, run: Run, relay: str, source: str, keys: dict[str, Any],
    row: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The one event of ``source`` that the relay function ``relay`` puts on the bus for an
    INSERT of ``row`` in its table's stream (it must fail no record)."""
    tap_url = tap(moto_server, bus, source)
    (relayed,) = run(function_id(relay), [le.stream_event([le.stream_record("INSERT", keys, row)])])
    assert relayed == {"batchItemFailures": []}
    messages = _client(moto_server, "sqs").receive_message(QueueUrl=tap_url, MaxNumberOfMessages=10)
    (event,) = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    assert event["source"] == source
    return event


def processed_event_ids(moto_server: str, tables: dict[str, str]) -> list[str]:
    """The event ids a consumer recorded as processed."""
    items = _client(moto_server, "dynamodb").scan(TableName=tables["ProcessedEventsTable"])
    return [item["event_id"]["S"] for item in items["Items"]]


def test_child_sees_no_package_from_this_virtualenv(
    task_dirs: dict[str, Path], lambda_runtime: Path
) -> None:
    """The isolation the other checks rely on: pytest, moto and the venv's svckit are absent."""
    result = run_isolated(
        "import importlib.util as u\n"
        "print([m for m in ('pytest', 'moto', 'svckit', 'argon2', 'boto3') if u.find_spec(m)])",
        task_dirs[PRODUCT.name], lambda_runtime,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # svckit comes from the zip's vendored copy, boto3 from the runtime stand-in.
    assert result.stdout.strip() == "['svckit', 'boto3']"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_zip_holds_its_handler_and_dependencies_and_no_test_or_venv_leftovers(
    name: str, task_dirs: dict[str, Path]
) -> None:
    task = task_dirs[name]
    for present in ("app.py", "chalice/app.py", "svckit/web.py", "jwt", "cryptography"):
        assert (task / present).exists(), present
    for absent in ("boto3", "botocore", "tests", ".chalice"):
        assert not (task / absent).exists(), absent
    assert not list(task.rglob("*.pem")), "a key file was packaged"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_zip_carries_the_shared_library_as_it_is(name: str, task_dirs: dict[str, Path]) -> None:
    vendored = {p.name: p.read_bytes() for p in (task_dirs[name] / "svckit").glob("*.py")}
    assert vendored == {p.name: p.read_bytes() for p in SVCKIT_SOURCE.glob("*.py")}


def test_user_api_zip_registers_logs_in_with_the_secret_key_and_guards_writes(
    moto_server: str, stage_aws: dict[str, str], key_material: tuple[str, str],
    templates: dict[str, dict[str, Any]], zip_functions: Callable[[str, str], Any],
) -> None:  # fmt: skip
    tables, run = zip_functions(USER.name, "users-zipcheck")
    env = function_env(templates[USER.name], {**tables, **stage_aws})
    assert env["JWT_SIGNING_KEY"] == "secretsmanager:" + stage_aws["SigningKeySecretArn"]
    credentials = {"username": "zip_user", "password": "correct-horse-1234"}
    wrong = {"username": "zip_user", "password": "wrong-guess-4242"}
    health, registered, refused_login, logged_in, promote = run(API_FUNCTION, [
        proxy_event("GET", "/health"),
        proxy_event("POST", "/register", body=credentials),
        proxy_event("POST", "/login", body=wrong),
        proxy_event("POST", "/login", body=credentials),
        proxy_event("PUT", "/user/promote/{username}", "/user/promote/zip_user",
                    path_parameters={"username": "zip_user"}),
    ])  # fmt: skip
    assert health["statusCode"] == 200
    assert body(health)["service"] == "user_api"
    assert "X-Request-Id" in health["headers"]
    assert registered["statusCode"] == 201, registered
    assert body(registered)["user"]["username"] == "zip_user"
    assert refused_login["statusCode"] == 401, refused_login
    assert logged_in["statusCode"] == 200, logged_in
    issuer, audience = issuer_for(STAGE), audience_for(STAGE)
    verifier = TokenVerifier(key_material[1], issuer=issuer, audience=audience)
    assert verifier.verify(body(logged_in)["access_token"]).username == "zip_user"
    assert refused(promote)
    # The writes really went to the tables the template names: the user, and the failed login
    # counted once for the name and once for the source address.
    dynamodb = _client(moto_server, "dynamodb")
    assert dynamodb.scan(TableName=tables["Table"])["Count"] == 1
    counted = dynamodb.scan(TableName=tables["LoginAttemptsTable"])["Items"]
    assert sorted(item["counter_key"]["S"].split("#")[0] for item in counted) == ["name", "source"]
    assert [item["attempts"]["N"] for item in counted] == ["1", "1"]


def test_product_api_zip_refuses_a_write_without_token_and_takes_one_with(
    stage_aws: dict[str, str], key_material: tuple[str, str],
    templates: dict[str, dict[str, Any]], zip_functions: Callable[[str, str], Any],
) -> None:  # fmt: skip
    tables, run = zip_functions(PRODUCT.name, "products-zipcheck")
    assert "JWT_SIGNING_KEY" not in function_env(templates[PRODUCT.name], {**tables, **stage_aws})
    token = TokenIssuer(key_material[0], ttl_seconds=300, stage=STAGE).issue("zip_user")
    product = {"product_id": "zip-1", "product_name": "Laptop"}
    health, anonymous, added, listed = run(API_FUNCTION, [
        proxy_event("GET", "/health"),
        proxy_event("POST", "/add_product", body=product),
        proxy_event("POST", "/add_product", body=product,
                    headers={"Authorization": f"Bearer {token}"}),
        proxy_event("GET", "/get_products"),
    ])  # fmt: skip
    assert health["statusCode"] == 200
    assert body(health)["service"] == "product_api"
    assert refused(anonymous)
    assert added["statusCode"] == 201, added
    assert body(added)["product"]["created_by"] == "zip_user"
    assert listed["statusCode"] == 200
    assert [p["product_id"] for p in body(listed)] == ["zip-1"]


class _Upstream(BaseHTTPRequestHandler):
    """Both services behind the gateway, answering only their health route."""

    seen: list[str] = []  # noqa: RUF012 - shared record of the paths called

    def do_GET(self) -> None:
        _Upstream.seen.append(self.path)
        payload = json.dumps({"status": "ok", "service": self.path.split("/")[1]}).encode()
        # The gateway asks for readiness (``/health?ready=1``); a service without it answers
        # its liveness, as this one does.
        self.send_response(200 if self.path.split("?")[0].endswith("/health") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        _Upstream.seen.append(self.path)
        self.send_response(500)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def upstreams() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Upstream.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_gateway_zip_reaches_the_services_by_the_urls_it_is_given_and_checks_tokens_first(
    upstreams: str, stage_aws: dict[str, str], templates: dict[str, dict[str, Any]],
    task_dirs: dict[str, Path], lambda_runtime: Path,
) -> None:  # fmt: skip
    template = templates[GATEWAY.name]
    urls = {  # the shape of the URL infra/app.py builds
        "USER_API_URL": f"{upstreams}/user/api/", "PRODUCT_API_URL": f"{upstreams}/product/api/"
    }
    env = function_env(template, stage_aws, given=urls)
    health, greet, anonymous = invoke(GATEWAY.name, task_dirs, lambda_runtime, template, env, [
        proxy_event("GET", "/health"),
        proxy_event("GET", "/greet/{name}", "/greet/Ann", path_parameters={"name": "Ann"}),
        proxy_event("POST", "/add_product", body={"product_id": "1", "product_name": "Laptop"}),
    ])  # fmt: skip
    assert health["statusCode"] == 200, health
    assert sorted(_Upstream.seen) == ["/product/api/health?ready=1", "/user/api/health?ready=1"]
    assert greet["statusCode"] == 200
    assert greet["body"] == "Hello, Ann!"
    assert refused(anonymous)
    assert all("add_product" not in path for path in _Upstream.seen), "forwarded without a token"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_zip_exposes_every_handler_its_template_names(
    name: str, templates: dict[str, dict[str, Any]], task_dirs: dict[str, Path],
    lambda_runtime: Path,
) -> None:  # fmt: skip
    """Each function's ``Handler`` (``app.app``, ``app.relay_user_changes``...) is an attribute
    of the zip's own ``app`` module that Lambda can call."""
    handlers = sorted(
        resource["Properties"]["Handler"]
        for resource in templates[name]["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    )
    expected = [f"app.{handler_of(i)}" for i in functions_of(BY_NAME[name]) if i != API_FUNCTION]
    assert handlers == sorted(["app.app", *expected])
    attributes = [h.split(".", 1)[1] for h in handlers]
    result = run_isolated(
        f"import app\nprint([a for a in {attributes!r} if not callable(getattr(app, a, None))])",
        task_dirs[name], lambda_runtime, LAMBDA_ENVIRONMENT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_user_api_zip_relays_its_stream_to_the_bus_and_grants_points_once(
    moto_server: str, stage_aws: dict[str, str], zip_functions: Callable[[str, str], Any]
) -> None:
    tables, run = zip_functions(USER.name, "users-events-zipcheck")
    credentials = {"username": "zip_points", "password": "correct-horse-1234"}
    (registered,) = run(API_FUNCTION, [proxy_event("POST", "/register", body=credentials)])
    assert registered["statusCode"] == 201, registered

    # The consumer: the same ProductAdded delivered twice grants its points once; a message
    # that is not an event is the batch's only failure. The event names the registration it
    # was earned by (product_api copies the token's account id), as a real one does.
    dynamodb = _client(moto_server, "dynamodb")
    key = {"username_key": {"S": "zip_points"}}
    account = dynamodb.get_item(TableName=tables["Table"], Key=key)["Item"]["account_id"]["S"]
    data = {"product_id": "p-1", "product_name": "Laptop", "created_by": "zip_points",
            "created_by_account": account}  # fmt: skip
    added = le.envelope(events.PRODUCT_ADDED, data, events.PRODUCT_SOURCE, "evt-product-1")
    good, bad = le.sqs_record(le.eventbridge_body(added)), le.sqs_record("not json")
    again = le.sqs_record(le.eventbridge_body(added))
    first, second = run(function_id("on_product_events"), [le.sqs_event([good, bad]),
                                                          le.sqs_event([again])])  # fmt: skip
    assert le.failed_ids(first) == [bad["messageId"]]
    assert second == {"batchItemFailures": []}
    user = dynamodb.get_item(TableName=tables["Table"], Key=key)
    assert user["Item"]["points"] == {"N": "10"}
    assert processed_event_ids(moto_server, tables) == ["evt-product-1"]

    # The relay: a registration in the stream becomes UserRegistered on the bus, without the
    # row's secrets.
    row = {"username_key": "zip_new", "username": "zip_new", "account_id": "acct-zip-new",
           "created_at": "2026-11-22T01:00:00Z", "password_hash": "$argon2id$secret-hash",
           "email": "zip_new@example.com"}  # fmt: skip
    event = relay_insert(
        moto_server, stage_aws["EventBusName"], run, "relay_user_changes", events.USER_SOURCE,
        {"username_key": "zip_new"}, row,
    )  # fmt: skip
    assert event["detail-type"] == events.USER_REGISTERED
    assert event["detail"]["data"] == {
        "username": "zip_new", "account_id": "acct-zip-new", "created_at": "2026-11-22T01:00:00Z"
    }
    assert "secret-hash" not in json.dumps(event)
    assert "example.com" not in json.dumps(event)


def test_product_api_zip_relays_its_stream_and_removes_a_deleted_account(
    moto_server: str, stage_aws: dict[str, str], zip_functions: Callable[[str, str], Any]
) -> None:
    tables, run = zip_functions(PRODUCT.name, "products-events-zipcheck")
    dynamodb = _client(moto_server, "dynamodb")
    for product_id, creator, account in (
        ("gone-1", "zip_gone", "acct-gone"),
        ("gone-2", "zip_gone", "acct-gone"),
        ("later-1", "zip_gone", "acct-later"),  # the name registered again: not deleted
        ("other-1", "zip_other", "acct-other"),
    ):
        item = {"product_id": product_id, "product_name": "Laptop", "created_by": creator,
                "created_by_account": account, "created_at": "2026-11-22T01:00:00Z"}  # fmt: skip
        dynamodb.put_item(TableName=tables["Table"], Item=dynamo.to_item(item))

    data = {"username": "zip_gone", "account_id": "acct-gone"}
    deleted = le.envelope(events.USER_DELETED, data, events.USER_SOURCE, "evt-user-1")
    batch = le.sqs_event([le.sqs_record(le.eventbridge_body(deleted))])
    (answer,) = run(function_id("on_user_events"), [batch])
    assert answer == {"batchItemFailures": []}
    left = sorted(i["product_id"]["S"] for i in dynamodb.scan(TableName=tables["Table"])["Items"])
    assert left == ["later-1", "other-1"]
    revoked = dynamodb.scan(TableName=tables["RevokedAccountsTable"])["Items"]
    assert [item["account_id"]["S"] for item in revoked] == ["acct-gone"]
    assert processed_event_ids(moto_server, tables) == ["evt-user-1"]

    product = {"product_id": "new-1", "product_name": "Phone", "created_by": "zip_user",
               "created_by_account": "acct-zip-user", "created_at": "2026-11-22T01:00:00Z"}
    event = relay_insert(
        moto_server, stage_aws["EventBusName"], run, "relay_product_changes",
        events.PRODUCT_SOURCE, {"product_id": "new-1"}, product,
    )  # fmt: skip
    assert event["detail-type"] == events.PRODUCT_ADDED
    assert event["detail"]["data"]["product_id"] == "new-1"
    assert event["detail"]["data"]["created_by"] == "zip_user"
    assert event["detail"]["data"]["created_by_account"] == "acct-zip-user"
