"""Accounts product_api has heard were deleted (``UserDeleted``), so their tokens act for nobody.

Tokens are verified here with the public key alone, so a deleted user's unexpired token would
still verify. user_api announces each deletion with the account id its tokens carry (``acct``),
and this table remembers those accounts for longer than any token lives. An account id belongs
to one registration of a name, so a name registered again is a new account whose tokens work.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from svckit import config, dynamo

TABLE_SETTING = "REVOKED_ACCOUNTS_TABLE"
KEY = "account_id"
# Longer than any token lives (user_api's TOKEN_TTL_SECONDS, an hour by default), and longer than
# the event can come back (svckit.events.PROCESSED_RETENTION_SECONDS); then DynamoDB's TTL
# forgets the account, whose every token has long expired.
RETENTION_SECONDS = 30 * 24 * 3600


def legacy_key(username: str) -> str:
    """The key that stands for a registration from before account ids, whose tokens carry no
    ``acct``: its name (in lower case, as names are unique). Outside the account id's shape, so
    it cannot meet one; a later registration of the name has an account id, and its tokens are
    checked by that instead."""
    return f"name:{username.lower()}"


def _table() -> str:
    return config.require(TABLE_SETTING)


def revoke(account_id: str, username: str, event_id: str) -> None:
    """Remember ``account_id`` as deleted. A plain put: doing it again changes nothing a reader
    looks at, so a redelivered event may repeat it."""
    now = int(time.time())
    dynamo.client().put_item(
        TableName=_table(),
        Item=dynamo.to_item(
            {
                KEY: account_id,
                "username": username,
                "event_id": event_id,
                "revoked_at": now,
                "expires_at": now + RETENTION_SECONDS,
            }
        ),
    )


def is_revoked(account_id: str) -> bool:
    """One consistent GetItem of the key only: a revocation applies from the moment it is
    stored."""
    try:
        response = dynamo.client().get_item(
            TableName=_table(),
            Key={KEY: {"S": account_id}},
            ConsistentRead=True,
            ProjectionExpression=KEY,
        )
    except ClientError as exc:
        dynamo.raise_if_throttled(exc)
        raise
    return "Item" in response
