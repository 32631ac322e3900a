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
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from chalice import BadRequestError, ConflictError, Response, UnprocessableEntityError
from chalice.app import Request, handle_extra_types

from svckit import config
from svckit.errors import ServiceUnavailableError, error_response

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TABLE_SETTING = "IDEMPOTENCY_TABLE"
EXPIRY_SECONDS = 24 * 3600
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # 1-255 visible ASCII characters
# The answer's headers a replay repeats (Content-Type too: it is part of the body's meaning).
KEPT_HEADERS = ("Content-Type", "Location", "Link", "Retry-After")
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


def client_request_token(operation: str) -> str | None:
    """A DynamoDB ``ClientRequestToken`` (at most 36 characters) the same on every attempt of
    the keyed request, one per ``operation`` of it; None without a key. DynamoDB recognises a
    repeated token for 10 minutes: a retry within them does not apply the change twice."""
    token = _token.get()
    if token is None:
        return None
    return hashlib.sha256(f"{token}\0{operation}".encode()).hexdigest()[:36]


_KEYED_ON = "key"
_VALIDATED_ON = "[caller, method, route, params, query, body]"
_store_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _store(table: str, client: Any) -> Any:
    """One persistence layer per table and client, configured here once under a lock: Powertools
    configures on each call and marks itself configured before it sets the key and validation
    expressions, so two threads of the local server racing a first request could hash a record
    without them (seen)."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
    )

    with _store_lock:
        layer = DynamoDBPersistenceLayer(table_name=table, boto3_client=client)
        layer.configure(_settings(IdempotencyConfig), _run.__qualname__)
        return layer


def _settings(make: Any) -> Any:
    return make(
        event_key_jmespath=_KEYED_ON,
        payload_validation_jmespath=_VALIDATED_ON,
        expires_after_seconds=EXPIRY_SECONDS,
        response_hook=_replayed,
    )


class _Refused(Exception):
    """A returned 4xx/5xx answer, raised so that Powertools keeps no record of it."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer["status"])
        self.answer = answer


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
         request: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The view, once per key: ``request`` is what Powertools keys and validates on. Only a
    success is kept: a refusal (a 429 whose Retry-After runs out, a 409) may be asked again."""
    answer = _answer_of(view(*args, **kwargs))
    if answer["status"] >= 400:
        raise _Refused(answer)
    return answer


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
            IdempotencyInconsistentStateError,
            IdempotencyValidationError,
        )

        described = {
            "key": key,
            "caller": caller(request),
            "method": request.method,
            "route": request.path,  # Chalice's route template: the parameters are apart
            "params": dict(request.uri_params or {}),
            "query": dict(request.query_params or {}),
            "body": (request.raw_body or b"").decode("utf-8", "replace"),
        }
        settings = _settings(IdempotencyConfig)
        if (context := lambda_context()) is not None:
            settings.register_lambda_context(context)
        once = idempotent_function(
            data_keyword_argument="request",
            persistence_store=_store(config.require(TABLE_SETTING), client()),
            config=settings,
        )(_run)
        # The request itself, not only its key: another request under a key whose first
        # attempt left no record (it failed) never takes the first one's writes for its own.
        whole = json.dumps(described, sort_keys=True).encode()
        token = _token.set(hashlib.sha256(whole).hexdigest()[:32])
        try:
            answer = once(view=view, args=args, kwargs=kwargs, request=described)
        except _Refused as refused:
            answer = refused.answer
        except IdempotencyValidationError as exc:
            raise UnprocessableEntityError(
                f"{HEADER} was already used for a different request"
            ) from exc
        except IdempotencyAlreadyInProgressError:
            # The first attempt's record holds the key until the invocation it ran in would
            # have timed out: come back then (its Lambda timeout bounds it).
            wait = math.ceil(context.get_remaining_time_in_millis() / 1000) if context else 10
            return error_response(
                ConflictError(f"a request with this {HEADER} is still in progress"),
                headers={"Retry-After": str(max(wait, 1))},
            )
        except IdempotencyInconsistentStateError:
            return error_response(
                ServiceUnavailableError("the request's record changed meanwhile, retry shortly"),
                headers={"Retry-After": "1"},
            )
        finally:
            _token.reset(token)
        headers = dict(answer["headers"])
        if answer.get("replayed"):
            headers[REPLAYED_HEADER] = "true"
        return Response(body=answer["body"], status_code=answer["status"], headers=headers)

    return keyed
