"""Each app's OpenAPI document against the app itself, OpenAPI 3.1, and API.md's route tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from chalice import BadRequestError
from openapi_spec_validator import OpenAPIV31SpecValidator

from svckit import idempotency, openapi, validation, web
from tests.support.apps import load_app
from tools import services

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT.parent / "shared" / "API.md"
SERVICES = (services.USER, services.PRODUCT)


def _documents() -> dict[str, dict[str, Any]]:
    docs = {s.name: openapi.build(load_app(s).app, s.name) for s in SERVICES}
    gateway = load_app(services.GATEWAY).app
    docs[services.GATEWAY.name] = openapi.build(gateway, services.GATEWAY.name, dict(docs))
    return docs


DOCS = _documents()
APPS = {s.name: s for s in (*SERVICES, services.GATEWAY)}


@pytest.mark.parametrize("name", sorted(APPS))
def test_the_document_has_exactly_the_apps_routes(name: str) -> None:
    app = load_app(APPS[name]).app
    in_app = {(path, method.lower()) for path, methods in app.routes.items() for method in methods}
    in_doc = {(path, method) for path, ops in DOCS[name]["paths"].items() for method in ops}
    assert in_app == in_doc


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_route_is_described_at_its_view(name: str) -> None:
    app = load_app(APPS[name]).app
    bare = [
        f"{method} {path}"
        for path, methods in app.routes.items()
        for method, entry in methods.items()
        if openapi.operation_of(entry.view_function) is None
    ]
    assert bare == []


@pytest.mark.parametrize("name", sorted(APPS))
def test_the_document_is_valid_openapi_3_1(name: str) -> None:
    OpenAPIV31SpecValidator(DOCS[name]).validate()


def _api_md_routes() -> list[tuple[str, str, str]]:
    """(app, method, path) of every route named in API.md's route tables."""
    if not API_MD.exists():  # the contract lives beside the checkout (../shared), as in CI
        return [("contract", "missing", str(API_MD))]
    found: list[tuple[str, str, str]] = []
    section = ""
    for line in API_MD.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].split()[0]
        if section in APPS and line.startswith("| `"):
            first = line.split("|")[1]
            for method, path in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) ([^`\s]+)", first):
                found.append((section, method.lower(), path))
    return found


def test_api_md_tables_are_read() -> None:
    apps = {app for app, _, _ in _api_md_routes()}
    assert apps == set(APPS), "API.md's route tables moved: this test reads none of some app"


@pytest.mark.parametrize(("app", "method", "path"), _api_md_routes())
def test_every_route_in_api_md_is_documented(app: str, method: str, path: str) -> None:
    assert app in DOCS, f"the contract {path} is not there to check the documents against"
    path, _, query = path.partition("?")
    operation = DOCS[app]["paths"].get(path, {}).get(method)
    assert operation is not None, f"{method.upper()} {path} is not in {app}'s document"
    names = {p["name"] for p in operation["parameters"]}
    assert {pair.split("=")[0] for pair in query.split("&") if pair} <= names


def test_the_gateway_shows_the_services_shapes() -> None:
    gateway = DOCS["gateway_api"]
    register = gateway["paths"]["/register_user"]["post"]
    assert register["requestBody"] == DOCS["user_api"]["paths"]["/register"]["post"]["requestBody"]
    assert {"502", "503", "504"} <= set(register["responses"])
    added = gateway["paths"]["/add_product"]["post"]
    assert added["security"] == [{openapi.BEARER: []}]
    assert added["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProductAdded"
    }
    assert (
        gateway["components"]["schemas"]["Product"]
        == (DOCS["product_api"]["components"]["schemas"]["Product"])
    )


def test_secured_and_write_routes_say_so() -> None:
    doc = DOCS["product_api"]
    delete = doc["paths"]["/products/{product_id}"]["delete"]
    assert delete["security"] == [{openapi.BEARER: []}]
    assert "401" in delete["responses"]
    assert "Idempotency-Key" in {p["name"] for p in delete["parameters"]}
    listing = doc["paths"]["/products"]["get"]
    assert listing["security"] == []
    assert {"limit", "cursor", "created_by"} <= {p["name"] for p in listing["parameters"]}
    assert {"Link", "X-Next-Cursor"} <= set(listing["responses"]["200"]["headers"])
    assert "Retry-After" in listing["responses"]["503"]["headers"]


def test_the_modules_limits_are_the_documents() -> None:
    assert openapi.MAX_BODY_BYTES == web.MAX_BODY_BYTES
    assert openapi.WRITE_METHODS == idempotency.WRITE_METHODS
    shape = re.compile(openapi.IDEMPOTENCY_KEY_PATTERN)
    for key in ("a", "x" * 255, "~!", "x" * 256, "", "a b", "é"):
        assert bool(shape.search(key)) == bool(idempotency._KEY_SHAPE.fullmatch(key)), key


# Values each rule is probed with: a rule's JSON Schema must accept exactly what it accepts.
PROBES: list[Any] = [
    "", " ", "ab", "abc", "john_doe", "a.b-c", "x" * 32, "x" * 33, "has space", "é" * 5,
    "a@b.co", "a@b", "a b@c.de", "@b.co", "a@b.c.d", "x" * 250 + "@b.co", "p" * 64, "p" * 65,
    "\t\n", " x ", "x" * 200, "x" * 201, "x" * 2000, "x" * 2001, 0, 1, 5, -1, 1000, 1001,
    Decimal("0.5"), Decimal("1.25"), Decimal("1.255"), Decimal("1000000000"),
    Decimal("1000000000.01"), True, None, [], {},
]  # fmt: skip
RULES = {
    "USERNAME": validation.USERNAME,
    "PASSWORD": validation.PASSWORD,
    "EMAIL": validation.EMAIL,
    "PRODUCT_ID": validation.PRODUCT_ID,
    "PRODUCT_NAME": validation.PRODUCT_NAME,
    "PRICE": validation.PRICE,
    "DESCRIPTION": validation.DESCRIPTION,
    "POINTS": validation.IntRange(1, 1000),
}


def _accepts(rule: Any, value: Any) -> bool:
    try:
        rule.check("field", value)
    except BadRequestError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rules_schema_accepts_what_the_rule_accepts(name: str) -> None:
    rule = RULES[name]
    schema = openapi.rule_schema(rule)
    disagree = []
    for value in PROBES:
        as_json = float(value) if isinstance(value, Decimal) else value
        by_schema = jsonschema.Draft202012Validator(schema).is_valid(as_json)
        if by_schema != _accepts(rule, value):
            disagree.append(value)
    assert disagree == []


def test_an_optional_null_is_allowed_and_unknown_fields_are_not() -> None:
    schema = openapi.body_schema(load_app(services.USER).REGISTRATION)
    check = jsonschema.Draft202012Validator(schema).is_valid
    base = {"username": "john_doe", "password": "correct-horse-1"}
    assert check({**base, "email": None})
    assert not check({**base, "nickname": "j"})
    assert not check({"username": "john_doe"})


def _request(context: dict[str, Any], headers: dict[str, str]) -> Any:
    return SimpleNamespace(context=context, headers=headers)


AWS_DOMAIN = "abc123.execute-api.eu-west-1.amazonaws.com"
LS_API = "zd9scnirf5"
LS_HOST_STYLE = f"{LS_API}.execute-api.localhost.localstack.cloud:4566"


def _context(domain: str, stage: str, path: str, resource: str = "/openapi.json") -> dict[str, Any]:
    """A REST API proxy event's requestContext, with the fields ``server_url`` reads."""
    return {"domainName": domain, "domainPrefix": domain.split(".")[0], "stage": stage,
            "path": path, "resourcePath": resource, "apiId": LS_API}  # fmt: skip


# (request context, X-Forwarded-Proto, on LocalStack, the server URL). The LocalStack shapes are
# those a deployed function received from LocalStack 2026.3.0 (tests/localstack/e2e).
SERVER_CASES = {
    "aws execute-api: the stage": (
        _context(AWS_DOMAIN, "prod", "/prod/openapi.json"), "https", False,
        f"https://{AWS_DOMAIN}/prod",
    ),
    "aws execute-api, a route with a parameter": (
        _context(AWS_DOMAIN, "prod", "/prod/users/john", "/users/{username}"), "https", False,
        f"https://{AWS_DOMAIN}/prod",
    ),
    "aws execute-api, the root route": (
        _context(AWS_DOMAIN, "prod", "/prod/", "/"), "https", False, f"https://{AWS_DOMAIN}/prod",
    ),
    "a stage named like a route": (
        _context(AWS_DOMAIN, "users", "/users/users/john", "/users/{username}"), "https", False,
        f"https://{AWS_DOMAIN}/users",
    ),
    "custom domain, root mapping: no stage": (
        _context("api.example.com", "prod", "/openapi.json"), "https", False,
        "https://api.example.com",
    ),
    "custom domain, base path mapping": (
        _context("api.example.com", "prod", "/v1/orders/openapi.json"), "https", False,
        "https://api.example.com/v1/orders",
    ),
    "custom domain mapped at the stage's name, not on LocalStack": (
        _context("api.example.com", "api", "/api/openapi.json"), "https", False,
        "https://api.example.com/api",
    ),
    "localstack path-style: the prefix the event lacks": (
        _context("127.0.0.1:4566", "api", "/api/openapi.json"), "HTTP", True,
        f"http://127.0.0.1:4566/_aws/execute-api/{LS_API}/api",
    ),
    "localstack path-style, a route with a parameter": (
        _context("localhost.localstack.cloud:4566", "api", "/api/users/j%20d", "/users/{name}"),
        "HTTP", True, f"http://localhost.localstack.cloud:4566/_aws/execute-api/{LS_API}/api",
    ),
    "localstack path-style, should the event carry the prefix one day: not doubled": (
        _context("127.0.0.1:4566", "api", f"/_aws/execute-api/{LS_API}/api/openapi.json"),
        "HTTP", True, f"http://127.0.0.1:4566/_aws/execute-api/{LS_API}/api",
    ),
    "localstack host-style: the stage, no prefix": (
        _context(LS_HOST_STYLE, "api", "/api/openapi.json"), "HTTP", True,
        f"http://{LS_HOST_STYLE}/api",
    ),
    "no path in the context: the stage on execute-api": (
        {"domainName": AWS_DOMAIN, "stage": "prod"}, "", False, f"https://{AWS_DOMAIN}/prod",
    ),
    "no path in the context: nothing on a custom domain": (
        {"domainName": "api.example.com", "stage": "prod"}, "", False, "https://api.example.com",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SERVER_CASES))
def test_servers_is_the_url_the_caller_reached(case: str) -> None:
    context, proto, on_localstack, expected = SERVER_CASES[case]
    headers = {"x-forwarded-proto": proto} if proto else {}
    assert openapi.server_url(_request(context, headers), on_localstack) == expected


def test_servers_is_the_host_locally() -> None:
    """The devserver, ``chalice local`` and the test client send no domainName."""
    local = {"path": "/openapi.json", "resourcePath": "/openapi.json"}
    assert openapi.server_url(_request(local, {"host": "127.0.0.1:5001"})) == (
        "http://127.0.0.1:5001"
    )
    assert openapi.server_url(_request({}, {})) == "http://localhost"


def test_localstack_is_known_by_the_variable_it_gives_every_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path_style = _request(_context("127.0.0.1:4566", "api", "/api/openapi.json"), {})
    monkeypatch.delenv(openapi.LOCALSTACK_ENV, raising=False)
    assert openapi.server_url(path_style) == "https://127.0.0.1:4566/api"
    monkeypatch.setenv(openapi.LOCALSTACK_ENV, "127.0.0.1")
    assert openapi.server_url(path_style) == f"https://127.0.0.1:4566/_aws/execute-api/{LS_API}/api"


def _proxy_event(context: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """A REST API Lambda proxy event for ``GET /openapi.json``, as LocalStack sends it."""
    return {
        "resource": "/openapi.json", "path": "/openapi.json", "httpMethod": "GET",
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
        "requestContext": {**context, "httpMethod": "GET", "accountId": "000000000000",
                           "identity": {"sourceIp": "127.0.0.1"}, "requestId": "r-1"},
    }  # fmt: skip


def test_the_served_document_names_the_stage_of_a_proxy_event(
    product_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole view, as the function runs it on LocalStack: the app called with the event a
    path-style request produced, ``servers`` spliced into the kept document."""
    monkeypatch.setenv(openapi.LOCALSTACK_ENV, "127.0.0.1")
    app = load_app(services.PRODUCT).app
    context = _context("127.0.0.1:4566", "api", "/api/openapi.json")
    headers = {"Host": "127.0.0.1:4566", "X-Forwarded-Proto": "HTTP"}
    answer = app(_proxy_event(context, headers), SimpleNamespace(aws_request_id="r-1"))
    assert answer["statusCode"] == 200, answer
    body = json.loads(answer["body"])
    assert body["servers"] == [{"url": f"http://127.0.0.1:4566/_aws/execute-api/{LS_API}/api"}]
    assert "/products" in body["paths"]


def test_get_openapi_json_needs_no_token_and_is_built_once(
    product_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[str] = []
    real = openapi.build

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        builds.append("built")
        return real(*args, **kwargs)

    monkeypatch.setattr(openapi, "build", counting)
    holder = load_app(services.PRODUCT).service.openapi
    monkeypatch.setattr(holder, "_built", None)
    first = product_client.http.get("/openapi.json")
    second = product_client.http.get("/openapi.json")
    assert first.status_code == second.status_code == 200
    body = json.loads(first.body)
    assert body["openapi"] == "3.1.0"
    assert body["servers"][0]["url"].startswith("http")
    assert builds == ["built"]


@pytest.mark.parametrize("service", [services.USER, services.PRODUCT, services.GATEWAY])
def test_importing_an_app_does_not_build_its_document(service: services.ServiceDef) -> None:
    probe = (
        "import sys, app; "
        "assert app.service.openapi._built is None, 'built at import'; "
        "heavy = {'jsonschema', 'openapi_spec_validator', 'schemathesis'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib" / "svckit"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=service.directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
