"""Each app's OpenAPI 3.1 document, made from the definitions the code already runs on.

Nothing here is a second copy of the contract. The paths, methods and path parameters come from
Chalice's route table (``app.routes``); request bodies, path and query parameters are the
:mod:`svckit.validation` rules the views check with, turned into JSON Schema by one function per
rule type; what varies per route and exists nowhere else (the answer's shape, whether a token is
needed, which service a gateway route forwards to) is one :func:`describe` annotation on the view,
next to the code that builds that answer. A route without one still appears (the route table is
the source), and ``tests/svckit/test_openapi.py`` fails on it.

Cold start: importing this module costs nothing beyond ``re`` and ``dataclasses`` (the apps import
it for :func:`describe`); the document is built at the first ``GET /openapi.json`` and kept for
the process's life. Only ``servers`` is per request: it is the URL the caller reached.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from svckit import validation

if TYPE_CHECKING:
    from chalice.app import Request

    from svckit.web import Service

OPENAPI_VERSION = "3.1.0"
ROUTE = "/openapi.json"
ERROR_REF = "Error"
BEARER = "bearerAuth"
# Kept equal to the modules that enforce them (svckit.web, svckit.idempotency, svckit.pagination,
# svckit.overload); the tests compare them, so a change there shows here.
MAX_BODY_BYTES = 64 * 1024
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Auth = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class Model:
    """A named response shape: one entry under ``components.schemas``, referenced by ``$ref``.
    ``schema`` may hold other models (and lists of them); they are referenced the same way."""

    name: str
    schema: Mapping[str, Any]


def array_of(item: Model | Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def announced(name: str, message: str, key: str, item: Model) -> Model:
    """A creating route's answer: ``{"message": <fixed text>, <key>: <what was made>}``."""
    return Model(name, {
        "type": "object", "required": ["message", key],
        "properties": {"message": {"const": message}, key: item}, "additionalProperties": False,
    })  # fmt: skip


@dataclass(frozen=True)
class Operation:
    """What one view adds to the route table: the only facts about a route not found elsewhere.

    ``answers`` maps the success status (and any status only this view makes, such as 403 or
    409) to its body: a :class:`Model` or schema, ``None`` for no body, or a string for an error
    in the contract's error shape (the string says when). Statuses every route of its kind can
    answer (400 for a body or parameters, 401 with a token, 413, 422, 429, 503, ...) are added
    by the builder from the other fields, so no view has to list them.
    """

    summary: str
    answers: Mapping[int, Any]
    body: validation.Schema | None = None
    auth: Auth = "none"
    paged: bool = False
    path: Mapping[str, validation.Text] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    text: bool = False  # the success answer is text/plain (seed 004's greeting)
    forwards: tuple[str, str] | None = None  # gateway: (service name, the service's path)


def describe(**facts: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Annotate a view (put it below its ``@app.route`` lines, so it is applied first)."""
    operation = Operation(**facts)

    def annotate(view: Callable[..., Any]) -> Callable[..., Any]:
        view.__openapi__ = operation  # type: ignore[attr-defined]
        return view

    return annotate


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The annotation of a registered view, through the wrappers ``svckit.web`` puts round it
    (each uses ``functools.wraps``, so ``__wrapped__`` leads back to the view)."""
    while view is not None:
        found = getattr(view, "__openapi__", None)
        if isinstance(found, Operation):
            return found
        view = getattr(view, "__wrapped__", None)  # type: ignore[assignment]
    return None


# --- validation rules as JSON Schema --------------------------------------------------------


def _anchored(pattern: re.Pattern[str]) -> str:
    """``Text`` patterns are applied with ``fullmatch``; JSON Schema's ``pattern`` searches."""
    return f"^(?:{pattern.pattern})$"


def rule_schema(rule: Any) -> dict[str, Any]:
    """The JSON Schema of one ``svckit.validation`` rule: the same bounds it checks."""
    if isinstance(rule, validation.Text):
        schema: dict[str, Any] = {
            "type": "string",
            "minLength": rule.min_length,
            "maxLength": rule.max_length,
        }
        if rule.pattern is not None:
            schema["pattern"] = _anchored(rule.pattern)
        elif not rule.allow_blank:
            schema["pattern"] = r"\S"  # at least one character that is not white space
        return schema
    if isinstance(rule, validation.Email):
        return {"type": "string", "maxLength": 254, "pattern": _anchored(rule._shape)}
    if isinstance(rule, validation.Money):
        return {
            "type": "number",
            "minimum": 0,
            "maximum": _number(rule.maximum),
            "multipleOf": 0.01,
        }
    if isinstance(rule, validation.IntRange):
        return {"type": "integer", "minimum": rule.minimum, "maximum": rule.maximum}
    raise TypeError(f"no JSON Schema for {type(rule).__name__}")


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``Schema.check`` treats an optional field sent as ``null`` as absent."""
    return {**schema, "type": [schema["type"], "null"]}


def body_schema(schema: validation.Schema) -> dict[str, Any]:
    """A ``validation.Schema`` as JSON Schema: unknown fields are refused, as ``check`` does."""
    properties = {name: rule_schema(rule) for name, rule in schema.required.items()}
    properties.update({name: _nullable(rule_schema(r)) for name, r in schema.optional.items()})
    return {
        "type": "object",
        "required": list(schema.required),
        "properties": properties,
        "additionalProperties": False,
    }


# --- shapes shared by every app ---------------------------------------------------------------

ERROR = Model(
    ERROR_REF,
    {
        "description": "Chalice's error shape: the error's class and a message naming the field "
        "and the rule.",
        "type": "object",
        "required": ["Code", "Message"],
        "properties": {"Code": {"type": "string"}, "Message": {"type": "string"}},
    },
)
# What ``Service.health`` and ``Service.readiness`` answer; a failing readiness adds Error's
# fields to it (so a 503 here is both shapes at once).
HEALTH = Model(
    "Health",
    {
        "type": "object",
        "required": ["status", "service", "time"],
        "properties": {
            "status": {"type": "string"},
            "service": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
)
_ERROR_TEXT = {
    400: "the body, a parameter or a header breaks the rule its message names",
    401: "the token is missing, invalid or expired",
    403: "the caller may not do this",
    404: "no such resource",
    409: "it already exists, or a request with this Idempotency-Key is still running",
    413: f"the body is larger than {MAX_BODY_BYTES} bytes",
    415: "the body is not application/json",
    422: "this Idempotency-Key was used for a different request",
    429: "throttled: retry after Retry-After seconds",
    502: "a service the gateway needs answered with an error",
    503: "a store or a service is unavailable: retry after Retry-After seconds",
    504: "a service the gateway needs did not answer in time",
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "string", "pattern": r"^[0-9]+$"},
}
_REQUEST_ID = {
    "description": "The caller's X-Request-Id when it had a safe shape, else a new one",
    "schema": {"type": "string"},
}


# --- the document ---------------------------------------------------------------------------


def _params_in(path: str) -> list[str]:
    return re.findall(r"{([^}]+)}", path)


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path.replace("{", "by_")).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def _parameters(method: str, path: str, op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _params_in(path):
        rule = op.path.get(name)
        schema = rule_schema(rule) if rule is not None else {"type": "string", "minLength": 1}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.paged:
        from svckit import pagination

        params.append({
            "name": "limit", "in": "query", "required": False,
            "description": "Items per page",
            "schema": {"type": "integer", "minimum": 1, "maximum": pagination.MAX_LIMIT,
                       "default": pagination.DEFAULT_LIMIT},
        })  # fmt: skip
        params.append({
            "name": "cursor", "in": "query", "required": False,
            "description": "The previous page's X-Next-Cursor, unchanged",
            "schema": {"type": "string", "minLength": 1,
                       "maxLength": pagination.MAX_CURSOR_LENGTH},
        })  # fmt: skip
    for name, rule in op.query.items():
        schema = rule_schema(rule) if rule is not None else {"type": "string"}
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
    if method in WRITE_METHODS:
        params.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "One per intended operation: a repeat within 24 hours with the same "
            "body returns the first answer with Idempotent-Replayed: true",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        })  # fmt: skip
    return params


def _error(status: int, why: str) -> dict[str, Any]:
    headers = {"X-Request-Id": _REQUEST_ID}
    if status in (429, 503):
        headers["Retry-After"] = _RETRY_AFTER
    return {
        "description": why,
        "headers": headers,
        "content": {"application/json": {"schema": ERROR}},
    }


def _responses(method: str, path: str, op: Operation, gateway: bool) -> dict[str, Any]:
    errors: dict[int, str] = {429: _ERROR_TEXT[429], 503: _ERROR_TEXT[503]}
    if op.body is not None:
        errors.update({s: _ERROR_TEXT[s] for s in (400, 413, 415)})
    if op.paged or op.query or _params_in(path):
        errors[400] = _ERROR_TEXT[400]
    if _params_in(path) and op.path:
        errors[404] = _ERROR_TEXT[404]
    if op.auth != "none":
        errors[401] = _ERROR_TEXT[401]
    if method in WRITE_METHODS:
        errors.update({s: _ERROR_TEXT[s] for s in (400, 409, 422)})
    if gateway:
        errors.update({s: _ERROR_TEXT[s] for s in (502, 503, 504)})
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        if isinstance(answer, str):
            errors[status] = answer
            continue
        headers: dict[str, Any] = {"X-Request-Id": _REQUEST_ID}
        if method in WRITE_METHODS:
            headers["Idempotent-Replayed"] = {
                "description": "true when this is the first answer to the same key, replayed",
                "schema": {"type": "string", "enum": ["true"]},
            }
        if op.paged:
            headers["Link"] = {
                "description": 'When more items remain: <?cursor=…&limit=…>; rel="next"',
                "schema": {"type": "string"},
            }
            headers["X-Next-Cursor"] = {
                "description": "When more items remain: the next page's cursor",
                "schema": {"type": "string"},
            }
        response: dict[str, Any] = {"description": op.summary, "headers": headers}
        if answer is not None:
            media = "text/plain" if op.text else "application/json"
            response["content"] = {media: {"schema": answer}}
        if status in (429, 503):
            headers["Retry-After"] = _RETRY_AFTER
        responses[str(status)] = response
    for status, why in sorted(errors.items()):
        if str(status) in responses:
            responses[str(status)]["description"] += f"; or {why}"
        else:
            responses[str(status)] = _error(status, why)
    return responses


def _operation(method: str, path: str, op: Operation, gateway: bool) -> dict[str, Any]:
    built: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "parameters": _parameters(method, path, op),
        "responses": _responses(method, path, op, gateway),
    }
    if op.body is not None:
        built["requestBody"] = {
            "required": True,
            "description": f"At most {MAX_BODY_BYTES} bytes",
            "content": {"application/json": {"schema": body_schema(op.body)}},
        }
    if op.auth == "required":
        built["security"] = [{BEARER: []}]
    elif op.auth == "optional":
        built["security"] = [{}, {BEARER: []}]
    else:
        built["security"] = []
    return built


def _undocumented(method: str, path: str) -> Operation:
    return Operation(summary=f"{method} {path} (not described)", answers={200: {}})


def _resolve(value: Any, components: dict[str, Any]) -> Any:
    """Models become ``$ref``s, each defined once under ``components.schemas``."""
    if isinstance(value, Model):
        if value.name not in components:
            components[value.name] = None  # reserved first: a model may contain itself
            components[value.name] = _resolve(dict(value.schema), components)
        return {"$ref": f"#/components/schemas/{value.name}"}
    if isinstance(value, Mapping):
        return {key: _resolve(item, components) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(item, components) for item in value]
    return value


def build(
    app: Any, title: str, upstream: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The document of a Chalice ``app``: every route of its table, as its annotation says.

    ``upstream`` (the gateway) maps a service's name to its document: a route annotated
    ``forwards=(service, path)`` takes that service's operation (its parameters, body,
    answers and security), plus the gateway's own 502/503/504, so the gateway's document
    shows the shapes of the services behind it without restating them.
    """
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for path, methods in sorted(app.routes.items()):
        for method, entry in sorted(methods.items()):
            op = operation_of(entry.view_function) or _undocumented(method, path)
            if op.forwards is not None and upstream is not None:
                built = _forwarded(method, path, op, upstream, components)
            else:
                built = _operation(method, path, op, gateway=op.forwards is not None)
            paths.setdefault(path, {})[method.lower()] = built
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": "1",
            "description": "Generated from the app's route table and validation rules. Every "
            "response carries X-Request-Id; errors are {Code, Message}; write routes take "
            "Idempotency-Key.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
    resolved = _resolve(document, components)
    resolved["components"]["schemas"] = dict(sorted(components.items()))
    return resolved


def _forwarded(
    method: str,
    path: str,
    op: Operation,
    upstream: Mapping[str, Mapping[str, Any]],
    components: dict[str, Any],
) -> dict[str, Any]:
    assert op.forwards is not None
    service_name, service_path = op.forwards
    source = upstream[service_name]
    found = copy.deepcopy(source["paths"][service_path][method.lower()])
    for name, schema in source.get("components", {}).get("schemas", {}).items():
        if components.setdefault(name, schema) != schema:
            raise ValueError(f"{service_name}'s schema {name} differs from another service's")
    found["operationId"] = _operation_id(method, path)
    for status in (502, 503, 504):
        found["responses"].setdefault(str(status), _error(status, _ERROR_TEXT[status]))
    found["responses"] = dict(sorted(found["responses"].items()))
    return found


# LocalStack puts it in every function's environment; AWS never does.
LOCALSTACK_ENV = "LOCALSTACK_HOSTNAME"
LOCALSTACK_PATH_STYLE = "/_aws/execute-api/"


def server_url(request: Request, on_localstack: bool | None = None) -> str:
    """The URL this app was reached at, so a client built from the document calls the same place.

    Behind API Gateway (a REST API's proxy event: ``request.context`` is its ``requestContext``)
    it is the scheme, ``domainName``, and the base path: the part of ``requestContext.path`` (the
    path the client sent) before the route, found by matching the route's ``resourcePath`` at the
    path's end. That one rule covers ``https://<id>.execute-api.<region>.amazonaws.com/<stage>``
    and LocalStack's ``<id>.execute-api.localhost.localstack.cloud:<port>/<stage>`` (the path
    starts with the stage) and a custom domain (the path starts with its base path mapping, if
    any, and never the stage). LocalStack's path-style URL, ``<host>/_aws/execute-api/<api id>/
    <stage>``, reaches the function with that prefix cut from the path and ``domainName`` being
    LocalStack's own host, so on LocalStack (``on_localstack``; by default, whether its variable
    is in the environment) a host that is no execute-api name gets the prefix back from ``apiId``.

    Locally (the devserver, ``chalice local``, the test client: no ``domainName``) it is the Host
    the caller used.
    """
    context = request.context or {}
    domain = context.get("domainName")
    if not domain:
        return f"http://{request.headers.get('host', 'localhost')}"
    # API Gateway sends "https"; LocalStack sends "HTTP". A scheme is case-insensitive, and
    # lower case is its canonical form (RFC 3986, 3.1).
    forwarded = request.headers.get("x-forwarded-proto") or "https"
    scheme = forwarded.split(",")[0].strip().lower()
    base = _base_path(context, domain)
    if on_localstack is None:
        on_localstack = LOCALSTACK_ENV in os.environ
    api_id = context.get("apiId")
    path_style = on_localstack and ".execute-api." not in domain and api_id
    if path_style and not base.startswith(LOCALSTACK_PATH_STYLE):
        base = f"{LOCALSTACK_PATH_STYLE}{api_id}{base}"
    return f"{scheme}://{domain}{base}"


def _base_path(context: Mapping[str, Any], domain: str) -> str:
    """What ``requestContext.path`` has before the route: ``/<stage>``, a custom domain's base
    path, or nothing. Each ``{name}`` of ``resourcePath`` stands for exactly one segment, so the
    route's length fixes where the base ends (Chalice has no greedy ``{name+}``; one would not
    match and take the fallback). Without a path that ends in the route (not seen on API
    Gateway), the stage on an execute-api name and nothing on any other."""
    full = str(context.get("path") or "")
    resource = str(context.get("resourcePath") or "")
    if full and resource:
        if resource == "/":
            return full.rstrip("/")
        route = "".join(
            "/[^/]+" if part.startswith("{") and part.endswith("}") else "/" + re.escape(part)
            for part in resource.strip("/").split("/")
        )
        found = re.fullmatch(f"(?P<base>(?:/[^/]+)*?){route}/?", full)
        if found is not None:
            return found.group("base")
    stage = context.get("stage")
    return f"/{stage}" if stage and ".execute-api." in domain else ""


class Document:
    """``GET /openapi.json`` of one service, built at its first request and then kept.

    ``sources`` (the gateway sets it) returns the documents of the services it forwards to; when
    it fails the answer is a 503 and nothing is kept, so the next request tries again.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.sources: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None
        self._built: str | None = None
        self._lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        """The built document (without ``servers``), as a fresh object."""
        return json.loads(self._text())

    def _text(self) -> str:
        with self._lock:
            if self._built is None:
                upstream = self.sources() if self.sources is not None else None
                built = build(self.service.app, self.service.name, upstream)
                self._built = json.dumps(built, separators=(",", ":"))
            return self._built

    def view(self) -> Any:
        from chalice import Response

        text = self._text()
        servers = json.dumps([{"url": server_url(self.service.request)}])
        # ``servers`` spliced into the kept text: no per-request copy of the whole document.
        body = text[:-1] + f',"servers":{servers}}}'
        return Response(body=body, status_code=200, headers={"Content-Type": "application/json"})


OPENAPI_ANSWER = Model(
    "OpenAPIDocument",
    {
        "type": "object",
        "required": ["openapi", "paths"],
        "properties": {"openapi": {"type": "string"}, "paths": {"type": "object"}},
    },
)


def serve(service: Service) -> Document:
    """Register ``GET /openapi.json`` on the service's app; the document waits for a request."""
    holder = Document(service)

    @describe(summary="This API's OpenAPI 3.1 document", answers={200: OPENAPI_ANSWER})
    def openapi_document() -> Any:
        return holder.view()

    service.app.route(ROUTE, methods=["GET"])(openapi_document)
    return holder
