"""API Gateway's own error answers (made without calling a function) in the contract's
``{"Code", "Message"}`` shape, with the ``X-Request-Id`` every answer carries. No ``aws_cdk``:
the gateway's tests answer with them byte for byte (``tests/gateway_api/stubs.py``).

They go into the Swagger body (``x-amazon-apigateway-gateway-responses``), not separate
``AWS::ApiGateway::GatewayResponse`` resources: a SAM API re-imports its body on each deployment,
dropping separate ones from the stage (aws/serverless-application-model#390, #623).
"""

from __future__ import annotations

import json
from typing import Any

# These answers never pass through the middleware that sets X-Request-Id (svckit.web), so it is
# mapped from API Gateway's own id for the request, the one its access and execution logs carry.
HEADERS = {"gatewayresponse.header.X-Request-Id": "context.requestId"}


def _response(code: str, status: int | None = None, message: str | None = None) -> dict[str, Any]:
    """``$context.error.messageString`` is API Gateway's message, already quoted as a JSON
    string. A fixed ``message`` must hold no ``$`` or ``#``: the template is VTL."""
    if message is not None and ("$" in message or "#" in message):
        raise ValueError(f"gateway response message {message!r}: '$' and '#' are VTL syntax")
    text = json.dumps(message) if message is not None else "$context.error.messageString"
    return {
        "responseParameters": dict(HEADERS),
        "responseTemplates": {"application/json": f'{{"Code": "{code}", "Message": {text}}}'},
        **({"statusCode": str(status)} if status is not None else {}),
    }


GATEWAY_RESPONSES: dict[str, dict[str, Any]] = {
    # API Gateway answers an unknown path or method with 403 "Missing Authentication Token";
    # a user of a REST API expects 404, and Chalice's local server gives 404 too.
    "MISSING_AUTHENTICATION_TOKEN":
        _response("NotFoundError", 404, "no route matches this method and path"),
    "RESOURCE_NOT_FOUND": _response("NotFoundError", 404),  # which DEFAULT_4XX would misname
    "THROTTLED": _response("TooManyRequestsError", 429, "too many requests, retry later"),
    "QUOTA_EXCEEDED": _response("TooManyRequestsError", 429),
    "REQUEST_TOO_LARGE": _response("PayloadTooLargeError", 413),
    "ACCESS_DENIED": _response("ForbiddenError", 403),
    "UNAUTHORIZED": _response("UnauthorizedError", 401),
    "BAD_REQUEST_BODY": _response("BadRequestError", 400),
    "BAD_REQUEST_PARAMETERS": _response("BadRequestError", 400),
    "INTEGRATION_FAILURE": _response("BadGatewayError", 502),
    "INTEGRATION_TIMEOUT": _response("GatewayTimeoutError", 504),
    # Anything else keeps API Gateway's status; the codes are Chalice's generic ones.
    "DEFAULT_4XX": _response("BadRequestError"),
    "DEFAULT_5XX": _response("InternalServerError"),
}
