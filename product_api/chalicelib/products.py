"""The products table: every access product_api makes to DynamoDB, one round trip each.

The partition key is the ``product_id`` exactly as given. Unlike usernames, product ids are
identifiers a client chooses or we generate (seed 000 uses ``"1"``), not names people retype, so
they are not folded to one case: a single conditional write is all uniqueness needs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

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
        dynamo.client().put_item(
            TableName=dynamo.table_name(),
            Item=dynamo.to_item(item),
            ConditionExpression="attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": KEY},
        )
    except ClientError as exc:
        if dynamo.error_code(exc) == "ConditionalCheckFailedException":
            raise ProductExistsError(product_id) from exc
        dynamo.raise_if_throttled(exc)
        raise
    # What was stored: absent optional fields are left out, not written as nulls.
    return {k: v for k, v in item.items() if v is not None}


def get(product_id: str) -> dict[str, Any] | None:
    """One strongly consistent GetItem, so a product is readable as soon as its 201 is sent."""
    try:
        response = dynamo.client().get_item(
            TableName=dynamo.table_name(), Key={KEY: {"S": product_id}}, ConsistentRead=True
        )
    except ClientError as exc:
        dynamo.raise_if_throttled(exc)
        raise
    item = response.get("Item")
    return dynamo.from_item(item) if item else None


def list_page(page: PageRequest) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Scan page in DynamoDB's order, which is stable across pages.

    No projection: every attribute a product has is public, and the view picks the fields anyway.
    """
    kwargs: dict[str, Any] = {"TableName": dynamo.table_name(), "Limit": page.limit}
    if page.start_key:
        kwargs["ExclusiveStartKey"] = {k: {"S": v} for k, v in page.start_key.items()}
    try:
        response = dynamo.client().scan(**kwargs)
    except ClientError as exc:
        dynamo.raise_if_throttled(exc)
        raise
    items = [dynamo.from_item(i) for i in response.get("Items", [])]
    last = response.get("LastEvaluatedKey")
    return items, ({k: v["S"] for k, v in last.items()} if last else None)
