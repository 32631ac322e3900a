"""``Idempotency-Key`` on every write route (API.md, "Retries and overload"), on Powertools'
Idempotency utility with its DynamoDB persistence layer (a table per service, ``resources.json``,
items expiring by TTL after 24 hours).

A write route called with the header runs once per key: the first answer (status, body and its
``Location``/``Link``) is stored, and a repeat with the same request gets it again with
``Idempotent-Replayed: true``, without the work being done again. The same key with another
request (body, method, path or caller) is ``422``; a repeat while the first still runs is ``409``
(Powertools' in-progress record, which expires with the invocation's remaining time, so a
crashed first attempt does not hold the key for a day). An answer that raised (a 4xx, the
store's 503) is not stored: the request may be sent again.

What a 503 leaves unknown (was the write stored before the store stopped answering?), the retry
finds out: while a keyed request runs, :func:`write_token` is derived from its caller and key, so
``svckit.dynamo.put_new`` recognises the first attempt's insert as its own (201, not 409), and a
generated id (:func:`derived_id`) is the same on every attempt (one product, not two).

Requests without the header cost nothing more; with it, two more writes to the store (the
in-progress record, then the answer). Powertools is imported only when a key arrives.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from chalice import BadRequestError, ConflictError, Response, UnprocessableEntityError
from chalice.app import Request, handle_extra_types

from svckit import config

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TABLE_SETTING = "IDEMPOTENCY_TABLE"
EXPIRY_SECONDS = 24 * 3600
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # 1-255 visible ASCII characters
# The answer's headers a replay repeats (Content-Type too: it is part of the body's meaning).
KEPT_HEADERS = ("Content-Type", "Location", "Link")
_NAMESPACE = uuid.UUID("5b0c3f1e-8a2d-4c6b-9e7f-1d2a3b4c5d6e")

_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "svckit_idempotency_token", default=None
)


def write_token() -> str | None:
    """The keyed request's write token (the same on every attempt with that key), or None."""
    return _token.get()


def derived_id() -> str | None:
    """An id the keyed request generates, the same on every attempt; None without a key."""
    token = _token.get()
    return str(uuid.uuid5(_NAMESPACE, token)) if token else None


@functools.lru_cache(maxsize=4)
def _store(table: str, client: Any) -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(table_name=table, boto3_client=client)


def _replayed(response: dict[str, Any], _record: Any) -> dict[str, Any]:
    return {**response, "replayed": True}


def _answer_of(result: Any) -> dict[str, Any]:
    """A view's result as the stored answer: status, body text and the headers a replay keeps."""
    if isinstance(result, Response):
        body = result.body
        headers = {k: v for k, v in result.headers.items() if k in KEPT_HEADERS}
        status = result.status_code
    else:
        body, headers, status = result, {}, 200
    headers.setdefault("Content-Type", "application/json")  # Chalice's default for a body
    if not isinstance(body, str | bytes):
        body = json.dumps(body, separators=(",", ":"), default=handle_extra_types)
    elif isinstance(body, bytes):
        body = body.decode("utf-8")
    return {"status": status, "body": body, "headers": headers}


def _run(view: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any],
         request: Mapping[str, str]) -> dict[str, Any]:  # fmt: skip
    """The view, once per key: ``request`` is what Powertools keys and validates on."""
    return _answer_of(view(*args, **kwargs))


def guard(
    view: Callable[..., Any],
    current_request: Callable[[], Request],
    caller: Callable[[Request], str],
    client: Callable[[], Any],
    lambda_context: Callable[[], Any],
) -> Callable[..., Any]:
    """``view`` run at most once per ``Idempotency-Key``; without the header, as it is."""

    @functools.wraps(view)
    def keyed(*args: Any, **kwargs: Any) -> Any:
        request = current_request()
        key = request.headers.get(HEADER.lower())
        if key is None:
            return view(*args, **kwargs)
        if not _KEY_SHAPE.fullmatch(key):
            raise BadRequestError(f"{HEADER} header must be 1-255 visible ASCII characters")
        from aws_lambda_powertools.utilities.idempotency import (
            IdempotencyConfig,
            idempotent_function,
        )
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        who = caller(request)
        settings = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="[caller, method, path, body]",
            expires_after_seconds=EXPIRY_SECONDS,
            response_hook=_replayed,
        )
        if (context := lambda_context()) is not None:
            settings.register_lambda_context(context)
        once = idempotent_function(
            data_keyword_argument="request",
            persistence_store=_store(config.require(TABLE_SETTING), client()),
            config=settings,
        )(_run)
        described = {
            "key": key,
            "caller": who,
            "method": request.method,
            "path": request.path,
            "body": (request.raw_body or b"").decode("utf-8", "replace"),
        }
        token = _token.set(hashlib.sha256(f"{who}\0{key}".encode()).hexdigest()[:32])
        try:
            answer = once(view=view, args=args, kwargs=kwargs, request=described)
        except IdempotencyValidationError as exc:
            raise UnprocessableEntityError(
                f"{HEADER} was already used for a different request"
            ) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise ConflictError(f"a request with this {HEADER} is still in progress") from exc
        finally:
            _token.reset(token)
        headers = dict(answer["headers"])
        if answer.get("replayed"):
            headers[REPLAYED_HEADER] = "true"
        return Response(body=answer["body"], status_code=answer["status"], headers=headers)

    return keyed
