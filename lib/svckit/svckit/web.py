"""What every service does around its views: request ids, logging, body limits, bodies, tokens.

``Service`` wraps a Chalice app with one HTTP middleware, which Chalice runs identically under
``chalice local``, ``chalice.test.Client`` and Lambda. Token verification is a call a view makes
(``service.principal()``), not an API Gateway authorizer, because the gateway's own 401/403 bodies
are not the contract's error shape and because it must behave the same in all three places.

A second middleware, for every event type, writes each invocation's metrics (``svckit.metrics``);
the HTTP one adds ``Requests`` and ``Latency`` by route and status class to them.
"""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from chalice import BadRequestError, Chalice, Response, UnauthorizedError
from chalice.app import Request

from svckit import aws, config, idempotency, keys, logs, metrics, openapi, overload
from svckit.errors import (
    PayloadTooLargeError,
    ServiceUnavailableError,
    error_body,
    error_response,
)
from svckit.pagination import PageRequest, parse_page
from svckit.tokens import Principal, TokenVerifier

MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_HEADER = "X-Request-Id"
# A caller's id is echoed into headers and logs, so only a safe, bounded shape is accepted.
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def utc_now() -> str:
    """ISO 8601 in UTC with a ``Z``, the contract's timestamp form."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def request_id_for(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Request-Id`` when it has a safe shape, else a new one. Also used for
    answers made outside the views (the local server's unknown-route 404), so every response
    carries an id by the same rule."""
    offered = headers.get(REQUEST_ID_HEADER.lower(), "") or headers.get(REQUEST_ID_HEADER, "")
    return offered if _REQUEST_ID_SHAPE.fullmatch(offered) else uuid.uuid4().hex


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@functools.lru_cache(maxsize=4)
def _verifier(jwks_ref: str, base_dir: str) -> TokenVerifier:
    # Keyed by the setting itself: built once per cold start in Lambda, and rebuilt when a test
    # runs under another key set.
    return TokenVerifier(keys.resolve(jwks_ref, Path(base_dir)))


def _store_client() -> Any:
    """Imported when a keyed write first arrives: gateway_api keeps no records, no boto3."""
    from svckit import dynamo

    return dynamo.records_client()


class _GuardedApp(Chalice):
    """Chalice with every route wrapped where it is registered, so no view can forget it:

    * every write route (POST, PUT, PATCH, DELETE) honours ``Idempotency-Key``
      (:mod:`svckit.idempotency`);
    * every route answers 503/429 with ``Retry-After`` for a store that is slow, unreachable or
      throttling (:func:`svckit.overload.guard`), never a 500. Chalice answers 500 for an
      exception before any middleware sees it, so the view itself is wrapped.
    """

    service: Service | None = None  # set by Service once it exists
    keeps_idempotency_records = True

    def route(self, path: str, idempotent: bool = True, **kwargs: Any) -> Callable[..., Any]:
        """``idempotent=False`` for a write that makes nothing and is safe to repeat, whose
        answer must not be kept (login: its token would sit in the records for a day)."""
        register = super().route(path, **kwargs)
        writes = idempotent and self.keeps_idempotency_records and (
            idempotency.WRITE_METHODS & set(kwargs.get("methods", ["GET"]))
        )

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            wrapped = view
            if writes:
                wrapped = idempotency.guard(
                    view, lambda: self._service().request, self._caller, _store_client,
                    lambda: self.lambda_context,
                )  # fmt: skip
            register(overload.guard(wrapped, lambda: self._service().log))
            return view

        return decorator

    def _service(self) -> Service:
        assert self.service is not None, "a Service makes its app"
        return self.service

    def _caller(self, request: Request) -> str:
        """Who is calling, for the scope of an idempotency key: the token's user and account,
        else the client's address (behind the gateway its X-Forwarded-For: the gateway's own
        address varies with its instance). A token that does not verify is left to the view,
        which refuses it on a route that needs one and ignores it on an anonymous one."""
        try:
            principal = self._service().principal(required=False)
        except UnauthorizedError:
            principal = None
        if principal is not None:
            return f"user:{principal.username.lower()}:{principal.account or '-'}"
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        return f"source:{forwarded or (request.context.get('identity') or {}).get('sourceIp')}"


class Service:
    """One Chalice app and the behaviour every service shares."""

    def __init__(
        self, name: str, project_dir: Path, keeps_idempotency_records: bool = True
    ) -> None:
        """``keeps_idempotency_records``: False for a service whose write routes only forward
        (gateway_api: the services it calls keep the records, and it owns no table)."""
        self.name = name
        self.project_dir = project_dir
        # Powertools owns the logger named after the service; Chalice must not add its own
        # plain-text handler to it, or every line would print twice in two formats.
        self.app = _GuardedApp(app_name=name, configure_logs=False)
        self.app.keeps_idempotency_records = keeps_idempotency_records
        # Chalice's debug switch sets the level of the logger named after the app (ERROR when
        # off), which is the service's own: the logger is made after it, at its own level.
        self.app.debug = False  # never a stack trace in a response body
        self.log = logs.make_logger(name)
        self.app.service = self
        self.metrics = metrics.Metrics(name, self.log)
        # Registered first, so it is the outer one: it opens the invocation every handler (HTTP
        # and events) adds its values to, and writes them once the inner one has answered.
        self.app.register_middleware(self.metrics.middleware, "all")
        self.app.register_middleware(self._around_request, "http")
        # GET /openapi.json: registered here so no app can miss it; built at its first request.
        self.openapi = openapi.serve(self)

    @property
    def request(self) -> Request:
        request = self.app.current_request
        assert request is not None, "only valid while handling a request"
        return request

    def _around_request(
        self, request: Request, get_response: Callable[[Request], Response]
    ) -> Response:
        started = time.perf_counter()
        request_id = request_id_for(request.headers)
        request.context["request_id"] = request_id
        self.log.thread_safe_append_keys(request_id=request_id)
        status = 500  # what Chalice answers if the code below raises
        try:
            body = request.raw_body or b""
            if len(body) > MAX_BODY_BYTES:
                response = error_response(
                    PayloadTooLargeError(f"request body must be at most {MAX_BODY_BYTES} bytes")
                )
            else:
                deadline = aws.start_request()
                try:
                    response = get_response(request)
                finally:
                    aws.end_request(deadline)
            status = response.status_code
            response.headers[REQUEST_ID_HEADER] = request_id
            if status in (429, 503):
                # "Busy" and "unavailable" say when to come back (the contract's Retry-After),
                # whichever code path answered them.
                response.headers.setdefault(
                    overload.RETRY_AFTER_HEADER, str(overload.RETRY_AFTER_SECONDS)
                )
            self.log.info(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return response
        finally:
            self.log.thread_safe_clear_keys()
            # The route as Chalice matched it, never the raw path: one series per route.
            route = f"{request.method} {request.context.get('resourcePath') or 'unmatched'}"
            labels = {"route": route, "status_class": metrics.status_class(status)}
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            metrics.add(metrics.REQUESTS, 1, **labels)
            metrics.add(metrics.LATENCY, elapsed_ms, **labels)

    @property
    def request_id(self) -> str:
        return str(self.request.context.get("request_id", ""))

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object, numbers with fractions as exact ``Decimal``."""
        raw = self.request.raw_body
        if not raw:
            raise BadRequestError("request body must be a JSON object")
        try:
            data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequestError("request body is not valid JSON") from exc
        except RecursionError as exc:
            raise BadRequestError("request body is nested too deeply") from exc
        if not isinstance(data, dict):
            raise BadRequestError("request body must be a JSON object")
        return data

    def page(self, key_attributes: Sequence[str]) -> PageRequest:
        return parse_page(self.request.query_params, key_attributes)

    def principal(self, required: bool = True) -> Principal | None:
        """The verified caller from ``Authorization: Bearer <JWT>``; 401 when it does not verify."""
        header = self.request.headers.get("authorization", "").strip()
        if not header:
            if required:
                raise UnauthorizedError("Authorization header with a Bearer token is required")
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("Authorization header must be 'Bearer <token>'")
        verifier = _verifier(config.require("JWT_JWKS"), str(self.project_dir))
        return verifier.verify(token.strip())

    def health(self) -> dict[str, Any]:
        """Liveness only: no table call, so probes cost nothing and never throttle real traffic."""
        return {"status": "ok", "service": self.name, "time": utc_now()}

    def wants_readiness(self) -> bool:
        """``GET /health?ready=1``: the caller (gateway_api's ``/health``) asks whether this
        service can serve, not only whether it runs. A query parameter rather than a route of
        its own, so a caller that asks a service without it still gets an answer (liveness)."""
        return (self.request.query_params or {}).get("ready") in ("1", "true")

    def readiness(self, checks: Mapping[str, Callable[[], object]]) -> Response:
        """Liveness plus each named check (a read of the table, the key loading): 200 when all
        pass, else 503 naming the failing ones.

        Kept apart from :meth:`health` because a check costs a table call, which the platform's
        frequent liveness probes must not; the gateway asks for readiness only when its own
        ``/health`` is asked (at most the stage's throttling rate). A check's error is logged by
        its type and never answered (it may hold internals). The token key set is checked for
        every service: each one verifies tokens.
        """
        every = {"jwks": lambda: _verifier(config.require("JWT_JWKS"), str(self.project_dir))}
        results: dict[str, str] = {}
        for name, check in {**every, **checks}.items():
            try:
                check()
            except Exception as exc:  # any failure at all means "not ready"
                self.log.warning("readiness check failed", check=name, error=type(exc).__name__)
                results[name] = "failing"
            else:
                results[name] = "ok"
        body: dict[str, Any] = {**self.health(), "checks": results}
        failing = [name for name, result in results.items() if result != "ok"]
        if not failing:
            return Response(body=body, status_code=200)
        error = ServiceUnavailableError(f"{self.name} is not ready: {', '.join(failing)}")
        body.update(status="failing", **error_body(error))
        return Response(body=body, status_code=503)

    def require_principal(self) -> Principal:
        principal = self.principal(required=True)
        assert principal is not None
        return principal
