"""The products table: every access product_api makes to DynamoDB, one round trip each.

The partition key is the ``product_id`` exactly as given. Unlike usernames, product ids are
identifiers a client chooses or we generate (seed 000 uses ``"1"``), not names people retype, so
they are not folded to one case: a single conditional write is all uniqueness needs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from svckit import dynamo
from svckit.pagination import PageRequest
from svckit.web import utc_now

KEY = "product_id"
KEY_ATTRIBUTES = (KEY,)


class ProductExistsError(Exception):
    pass


def create(
    product_id: str,
    product_name: str,
    created_by: str,
    price: Decimal | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Insert a new product; fail if the id is taken. One conditional PutItem, so two clients
    racing for the same id cannot both win, and the loser never overwrites the winner."""
    item = {
        KEY: product_id,
        "product_name": product_name,
        "price": price,
        "description": description,
        "created_by": created_by,
        "created_at": utc_now(),
    }
    try:
        return dynamo.put_new(item, KEY)
    except dynamo.ItemExistsError as exc:
        raise ProductExistsError(product_id) from exc


def get(product_id: str) -> dict[str, Any] | None:
    """A product is readable as soon as its 201 is sent (a consistent read)."""
    return dynamo.get({KEY: product_id})


def list_page(page: PageRequest) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Scan page. No projection: every attribute a product has is public, and the view picks
    the fields anyway."""
    return dynamo.scan_page(page.limit, page.start_key, KEY_ATTRIBUTES)
