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


def test_servers_is_the_stages_url_when_deployed_and_the_host_locally() -> None:
    deployed = {"domainName": "abc123.execute-api.eu-west-1.amazonaws.com", "stage": "prod"}
    assert openapi.server_url(_request(deployed, {})) == (
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    )
    custom = {"domainName": "api.example.com", "stage": "prod"}
    assert openapi.server_url(_request(custom, {})) == "https://api.example.com"
    assert openapi.server_url(_request({}, {"host": "127.0.0.1:5001"})) == "http://127.0.0.1:5001"


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
