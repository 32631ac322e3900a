"""HTTP errors beyond the ones Chalice ships, in Chalice's own error shape.

Chalice turns any ``ChaliceViewError`` raised by a view into ``{"Code": <class name>,
"Message": <text>}`` with the class's ``STATUS_CODE``. It has no 413, 502, 503 or 504, so those are
declared here with the same mechanism. Middleware cannot raise these (Chalice would answer 500),
so it builds the same shape with :func:`error_response`.
"""

from __future__ import annotations

from chalice import ChaliceViewError, NotFoundError, Response


class PayloadTooLargeError(ChaliceViewError):
    STATUS_CODE = 413


class BadGatewayError(ChaliceViewError):
    STATUS_CODE = 502


class ServiceUnavailableError(ChaliceViewError):
    STATUS_CODE = 503


class GatewayTimeoutError(ChaliceViewError):
    STATUS_CODE = 504


def error_body(error: ChaliceViewError) -> dict[str, str]:
    return {"Code": type(error).__name__, "Message": str(error)}


def error_response(error: ChaliceViewError, headers: dict[str, str] | None = None) -> Response:
    """The response Chalice itself would give for ``error``, for code paths outside a view."""
    return Response(body=error_body(error), status_code=error.STATUS_CODE, headers=headers or {})


def not_found(what: str, value: str) -> NotFoundError:
    """The one wording of a 404 for a named thing; long values are cut so a body stays small."""
    return NotFoundError(f"{what} {value[:64]!r} was not found")
