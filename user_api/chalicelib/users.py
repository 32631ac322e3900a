"""The users table: every access user_api makes to DynamoDB, one round trip each.

The partition key is the lower-cased username, which is what makes names unique without regard
to case with a single conditional write; the name as typed is kept for display.
"""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import ClientError

from svckit import dynamo, events
from svckit.pagination import PageRequest
from svckit.web import utc_now

KEY = "username_key"
KEY_ATTRIBUTES = (KEY,)
# Which registration of a name a row is: a fresh uuid4 at every registration, carried in the
# tokens issued to it, so a name deleted and registered again is a new account that the old
# account's tokens cannot act for. Rows made before it existed have none.
ACCOUNT = "account_id"
# Listing reads only public attributes: hashes and emails never leave the table for a list.
_PUBLIC = ("username", "points", "#s", "created_at")


class UserExistsError(Exception):
    pass


class UserNotFoundError(Exception):
    pass


class AccountChangedError(Exception):
    """The name now belongs to another registration than the one the caller acts for."""


# ``delete``'s account for a deletion of whoever holds the name (an admin's); any other value
# holds the deletion to that registration (``None``: a row from before account ids).
ANY_ACCOUNT = "*any*"


class StaleReadError(Exception):
    """The item changed between a read and the write based on it."""


def status_for(points: int) -> str:
    """Seed 003's promotion rule."""
    if points > 100:
        return "Gold"
    if points > 50:
        return "Silver"
    return "Bronze"


def _key(username: str) -> dict[str, Any]:
    return {KEY: {"S": username.lower()}}


def create(username: str, password_hash: str, email: str | None) -> dict[str, Any]:
    """Insert a new user; fail if the name is taken in any case. One conditional PutItem."""
    item = {
        KEY: username.lower(),
        "username": username,
        "password_hash": password_hash,
        "email": email,
        ACCOUNT: uuid.uuid4().hex,
        "points": 0,
        "status": status_for(0),
        "created_at": utc_now(),
    }
    try:
        return dynamo.put_new(item, KEY)
    except dynamo.ItemExistsError as exc:
        raise UserExistsError(username) from exc


def get(username: str) -> dict[str, Any] | None:
    """A consistent read, so a login right after registering finds the user."""
    return dynamo.get({KEY: username.lower()})


def delete(username: str, account: str | None = ANY_ACCOUNT) -> None:
    """Remove a user: one DeleteItem, conditional on the row being there and, unless
    ``account`` is ANY_ACCOUNT, on its being that registration (a token of a deleted account
    must not delete the next registration of the name, whatever happened since its check).

    Safe to retry (``dynamo.delete_where``: botocore's re-sent call, and a keyed client's retry
    after a 503). The failed condition's ``ALL_OLD`` tells the rest apart: a row still there
    (another registration) is AccountChangedError; none, for a new request, UserNotFoundError.
    """
    condition, names, values = "attribute_exists(#k)", {"#k": KEY}, {}
    if account != ANY_ACCOUNT:
        names["#a"] = ACCOUNT
        if account is None:
            condition += " AND attribute_not_exists(#a)"
        else:
            condition += " AND #a = :a"
            values[":a"] = account
    try:
        dynamo.delete_where({KEY: username.lower()}, condition, names, values)
    except dynamo.ConditionFailedError as exc:
        if exc.stored:
            raise AccountChangedError(username) from exc
        raise UserNotFoundError(username) from exc


def list_page(page: PageRequest) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Scan page of public attributes only."""
    return dynamo.scan_page(
        page.limit, page.start_key, KEY_ATTRIBUTES, ", ".join(_PUBLIC), {"#s": "status"}
    )


def _update(
    username: str, expression: str, condition: str, values: dict[str, Any]
) -> dict[str, Any]:
    try:
        response = dynamo.client().update_item(
            TableName=dynamo.table_name(),
            Key=_key(username),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames={
                "#k": KEY,
                **({"#s": "status"} if "#s" in expression else {}),
            },
            ExpressionAttributeValues=dynamo.to_item(values),
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if dynamo.error_code(exc) == "ConditionalCheckFailedException":
            raise StaleReadError(username) from exc
        dynamo.raise_if_throttled(exc)
        raise
    return dynamo.from_item(response["Attributes"])


def replace_hash(username: str, old_hash: str, new_hash: str) -> None:
    """Store a rehashed password, only if nobody changed it since we read it."""
    _update(
        username,
        "SET password_hash = :new",
        "attribute_exists(#k) AND password_hash = :old",
        {":new": new_hash, ":old": old_hash},
    )


def add_points(username: str, points: int) -> dict[str, Any]:
    """Atomically add points, exactly once even if the write is retried (``update_once``), then
    read the user back: a transaction cannot return the new item."""
    try:
        dynamo.update_once(
            {KEY: username.lower()},
            "ADD points :p",
            "attribute_exists(#k)",
            {"#k": KEY},
            {":p": points},
        )
    except dynamo.ConditionFailedError as exc:
        raise UserNotFoundError(username) from exc
    user = get(username)
    if user is None:  # deleted between the two calls
        raise UserNotFoundError(username)
    return user


def points_change(username: str, points: int, account: str | None) -> dict[str, Any]:
    """The TransactWriteItems entry that adds ``points`` to ``username``, only while the row is
    the registration ``account`` names (for an event without one, a row from before account
    ids, which has none either): points earned by an account that was deleted, or whose name
    now belongs to someone else, are not theirs to receive."""
    condition = "attribute_exists(#k) AND "
    values: dict[str, Any] = {":p": points}
    if account is None:
        condition += "attribute_not_exists(#a)"
    else:
        condition += "#a = :a"
        values[":a"] = account
    names = {"#k": KEY, "#a": ACCOUNT}
    return {
        "Update": {
            "TableName": dynamo.table_name(),
            "Key": _key(username),
            "UpdateExpression": "ADD points :p",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": dynamo.to_item(values),
        }
    }


def change_event(change: events.Change) -> tuple[str, dict[str, Any]] | None:
    """What a change of the users table announces (the relay's mapping): a new row is
    ``UserRegistered``, a removed one ``UserDeleted``; updates (points, status, a rehash) are
    nobody else's business. Fields are picked one by one: a row holds the password hash and the
    email, which never leave this service."""
    if change.name == "INSERT" and change.new:
        row = change.new
        return events.USER_REGISTERED, {
            "username": row["username"],
            "account_id": row.get(ACCOUNT),
            "created_at": row.get("created_at"),
        }
    if change.name == "REMOVE" and change.old:
        row = change.old
        return events.USER_DELETED, {"username": row["username"], "account_id": row.get(ACCOUNT)}
    return None


def set_status(username: str, points_seen: int) -> dict[str, Any]:
    """Set status from the points we read, only if they are still the points stored."""
    return _update(
        username,
        "SET #s = :s",
        "attribute_exists(#k) AND points = :p",
        {":s": status_for(points_seen), ":p": points_seen},
    )
