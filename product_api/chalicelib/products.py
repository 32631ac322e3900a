"""The products table: every access product_api makes to DynamoDB, one round trip each.

The partition key is the ``product_id`` exactly as given. Unlike usernames, product ids are
identifiers a client chooses or we generate (seed 000 uses ``"1"``), not names people retype, so
they are not folded to one case: a single conditional write is all uniqueness needs.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from svckit import dynamo
from svckit.pagination import PageRequest
from svckit.web import utc_now

KEY = "product_id"
KEY_ATTRIBUTES = (KEY,)
# The global secondary index of one creator's products (resources.json), in product_id order.
# A cursor on it holds the index key and the table key, which here are the same two attributes.
CREATOR = "created_by"
# Which registration of the creator's name added the product (the token's ``acct``), so that
# deleting an account removes its products and not those of a later registration of the name.
# Never shown: the views pick their fields.
CREATOR_ACCOUNT = "created_by_account"
BY_CREATOR = "by_creator"
BY_CREATOR_KEY_ATTRIBUTES = (CREATOR, KEY)


class ProductExistsError(Exception):
    pass


class ProductNotFoundError(Exception):
    pass


class NotCreatorError(Exception):
    """The product exists and the caller (not an admin) did not create it; nothing was deleted."""


def create(
    product_id: str,
    product_name: str,
    created_by: str,
    price: Decimal | None = None,
    description: str | None = None,
    created_by_account: str | None = None,
) -> dict[str, Any]:
    """Insert a new product; fail if the id is taken. One conditional PutItem, so two clients
    racing for the same id cannot both win, and the loser never overwrites the winner."""
    item = {
        KEY: product_id,
        "product_name": product_name,
        "price": price,
        "description": description,
        "created_by": created_by,
        CREATOR_ACCOUNT: created_by_account,
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


def list_by_creator_page(
    created_by: str, page: PageRequest
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Query page of the ``by_creator`` index: this creator's products only, never a Scan.
    ``created_by`` matches as stored (the token subject, spelled as the user registered)."""
    return dynamo.query_page(
        BY_CREATOR,
        "#c = :c",
        {"#c": CREATOR},
        {":c": created_by},
        page.limit,
        page.start_key,
        BY_CREATOR_KEY_ATTRIBUTES,
    )


def delete(
    product_id: str,
    caller: str,
    is_caller: Callable[[str], bool],
    admin: bool,
    account: str | None = None,
) -> None:
    """Delete a product: one conditional DeleteItem, so nothing can change hands between a check
    and the delete: the condition is checked where the delete is applied.

    The condition is "it exists" and, unless ``admin``, "the caller made it": ``created_by`` is
    the caller, or ``created_by_account`` is the caller's registration (``account``, from the
    token), whatever the spelling of the name stored with it. When it fails, DynamoDB returns
    the stored item (``ReturnValuesOnConditionCheckFailure``, no extra read): none means
    ProductNotFoundError (404), another creator NotCreatorError (403). A product from before
    accounts, stored with the caller's name spelled otherwise (``is_caller``; names are unique
    without regard to case), is deleted by a second conditional attempt on that spelling.
    Safe to retry (``dynamo.delete_where``); a keyed retry after a 503 is recognised only when
    the first attempt's parameters are the retry's, which the account makes the common case.
    """
    creator = caller
    for attempt in range(2):
        condition, names = "attribute_exists(#k)", {"#k": KEY}
        values: dict[str, Any] = {}
        if not admin:
            names["#c"] = CREATOR
            values[":c"] = creator
            if account is None:
                condition += " AND #c = :c"
            else:
                condition += " AND (#c = :c OR #a = :a)"
                names["#a"] = CREATOR_ACCOUNT
                values[":a"] = account
        try:
            dynamo.delete_where({KEY: product_id}, condition, names, values)
            return
        except dynamo.ConditionFailedError as exc:
            if not exc.stored:
                raise ProductNotFoundError(product_id) from exc
            stored_creator = str(exc.stored.get(CREATOR, ""))
        if admin or attempt or stored_creator == creator or not is_caller(stored_creator):
            raise NotCreatorError(product_id)
        creator = stored_creator
    raise NotCreatorError(product_id)  # not reached: the second attempt returns or raises


def delete_all_of(username: str, account: str | None) -> int:
    """Delete every product ``account`` added under ``username`` (``UserDeleted``); return how
    many this call deleted.

    Page by page on the ``by_creator`` index, never a Scan, each product with its own
    conditional delete: still that creator's, and added by that account (or by a token from
    before accounts existed, which can only be the deleted registration's). A product deleted
    meanwhile, or one of a later registration of the name, is left alone; an account from before
    account ids (``account`` None) takes only the products without one. Safe to repeat: a
    second run finds nothing left to delete.
    """
    deleted = 0
    start: dict[str, str] | None = None
    while True:
        items, start = dynamo.query_page(
            BY_CREATOR, "#c = :c", {"#c": CREATOR}, {":c": username}, 100, start,
            BY_CREATOR_KEY_ATTRIBUTES,
        )  # fmt: skip
        for item in items:
            if item.get(CREATOR_ACCOUNT) not in (account, None):
                continue  # a later registration's
            deleted += _delete_of_account(item[KEY], username, account)
        if start is None:
            return deleted


def _delete_of_account(product_id: str, username: str, account: str | None) -> int:
    condition = "#c = :c AND "
    values: dict[str, Any] = {":c": username}
    names = {"#c": CREATOR, "#a": CREATOR_ACCOUNT}
    if account is None:  # an account from before account ids: only its own, id-less products
        condition += "attribute_not_exists(#a)"
    else:
        condition += "(#a = :a OR attribute_not_exists(#a))"
        values[":a"] = account
    try:
        dynamo.delete_where({KEY: product_id}, condition, names, values)
    except dynamo.ConditionFailedError:
        return 0  # gone already, or no longer this account's
    return 1
