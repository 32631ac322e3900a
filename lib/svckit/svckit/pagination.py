"""Cursor pagination over one DynamoDB page per request.

The cursor is DynamoDB's ``LastEvaluatedKey``, JSON-encoded and base64url'd: opaque to clients,
stateless for us. A decoded cursor must have exactly the table's key attributes as strings, so a
forged one can at worst start a scan at another key, never inject other parameters. The ``Link``
target is the query-only relative reference ``<?cursor=…&limit=…>``: it resolves against whatever
URL the client called, so it stays right when the gateway passes it through unchanged and behind
an API Gateway stage prefix that the function never sees.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from chalice import BadRequestError, Response

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 1024
# ASCII digits only, and few of them. ``str.isdigit()`` also accepts superscripts and circled
# digits that ``int()`` then refuses (a 500), ``int()`` itself reads other scripts' digits, signs,
# spaces and underscores, and refuses more than 4300 digits: none of that is a client's limit.
# Leading zeros are harmless; the length bound keeps ``int()`` cheap and always successful.
_LIMIT_SHAPE = re.compile(r"[0-9]{1,16}")


@dataclass(frozen=True)
class PageRequest:
    limit: int
    start_key: dict[str, str] | None


def parse_page(query: Mapping[str, str] | None, key_attributes: Sequence[str]) -> PageRequest:
    query = query or {}
    raw_limit = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not _LIMIT_SHAPE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise BadRequestError(f"limit must be an integer between 1 and {MAX_LIMIT}")
        limit = int(raw_limit)
    cursor = query.get("cursor")
    start_key = decode_cursor(cursor, key_attributes) if cursor is not None else None
    return PageRequest(limit=limit, start_key=start_key)


def encode_cursor(last_key: Mapping[str, str]) -> str:
    raw = json.dumps(dict(last_key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, key_attributes: Sequence[str]) -> dict[str, str]:
    invalid = BadRequestError("cursor is invalid: pass back the X-Next-Cursor value unchanged")
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if (
        not isinstance(decoded, dict)
        or set(decoded) != set(key_attributes)
        or not all(isinstance(v, str) and v for v in decoded.values())
    ):
        raise invalid
    return decoded


def page_response(items: list[Any], last_key: Mapping[str, str] | None, limit: int) -> Response:
    """A JSON array, plus ``Link`` and ``X-Next-Cursor`` when DynamoDB says more remain."""
    headers: dict[str, str] = {}
    if last_key:
        cursor = encode_cursor(last_key)
        headers["X-Next-Cursor"] = cursor
        headers["Link"] = f'<?{urlencode({"cursor": cursor, "limit": limit})}>; rel="next"'
    return Response(body=items, status_code=200, headers=headers)
