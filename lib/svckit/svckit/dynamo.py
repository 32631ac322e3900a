"""DynamoDB access shared by the data-owning services.

One low-level client per process, made on first use (not at import, so moto's mocks and the
stage's environment apply), with short timeouts and the standard retry mode, which backs off on
throttling. The low-level client is used rather than ``boto3.resource`` because it imports
faster, which is cold-start time; boto3's own serializer does the marshalling.

Reading is where the CPU goes, so it has its own path. A list page is 100 items of about six
attributes: botocore walks its shape model for every one of them (about 2 ms of CPU a page,
most of a Scan's cost) and boto3's ``TypeDeserializer`` then makes a ``getattr`` dispatch per
attribute. So ``scan_page`` asks botocore to leave the ``Items`` of its own Scan unparsed (a
``before-parse`` hook, gated per call, every other field still parsed by botocore) and turns the
wire JSON into Python values with one small function. That function gives exactly what
``TypeDeserializer`` gives, type for type (``Decimal`` through DynamoDB's own context, sets,
``Binary``), which the unit tests hold it to.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from boto3.dynamodb.types import DYNAMODB_CONTEXT, Binary, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError
from chalice import TooManyRequestsError

from svckit import aws, config, idempotency, overload

_serializer = TypeSerializer()

THROTTLING_CODES = overload.THROTTLING_CODES


T = TypeVar("T")

# Per-call work botocore does that buys these services nothing, on top of the one retry budget:
# - parameter validation, which botocore documents as the switch to turn off for speed: every
#   request here is built by code, and DynamoDB validates it again anyway;
# - the default User-Agent, rebuilt twice per call (about 600 characters, sanitised one by one);
#   with a fixed one boto3 still appends botocore's name and version ("svckit Botocore/1.x").
HOT_PATH_CONFIG = Config(parameter_validation=False, user_agent="svckit")


def _once(make: Callable[[], T]) -> Callable[[], T]:
    """``make()`` on the first call, its value after that, made once even when threads ask
    together (the local server's threads take their first requests at the same moment, and
    each would otherwise build a client and a boto3 session of its own, ~0.3 s of CPU each).
    ``cache_clear()`` forgets the value, for tests that switch mocks."""
    made = functools.cache(make)
    lock = threading.Lock()

    def get() -> T:
        with lock:
            return made()

    get.cache_clear = made.cache_clear  # type: ignore[attr-defined]
    get.__doc__ = make.__doc__
    return get


def _make_client() -> Any:
    """The process's DynamoDB client, made on first use."""
    dynamodb = aws.make_client("dynamodb", HOT_PATH_CONFIG)
    dynamodb.meta.events.register("before-parse.dynamodb.Scan", _leave_items_unparsed)
    dynamodb.meta.events.register("before-parse.dynamodb.Query", _leave_items_unparsed)
    return dynamodb


client = _once(_make_client)


def _make_records_client() -> Any:
    """The idempotency records' client: the stage's budget with one attempt, so a record whose
    write was stored but whose answer was lost is the caller's 503 (retry), not a 409 from
    botocore's own re-send meeting the record it just made; not held to the request's time,
    so a failed request's record is still removed (else its key answers 409 for a while)."""
    return aws.make_client("dynamodb", Config(retries={"total_max_attempts": 1}), bounded=False)


records_client = _once(_make_records_client)


def table_name() -> str:
    """Every service names its own table in the stage's ``TABLE_NAME``."""
    return config.require("TABLE_NAME")


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _deserialiser(blob: Callable[[Any], bytes]) -> Callable[[Mapping[str, Any]], Any]:
    """One attribute value to its Python value, as ``TypeDeserializer.deserialize`` does it.

    The tests are in the order of how often each type occurs in our tables. ``blob`` turns a
    ``B`` value into bytes: botocore hands over bytes, the wire JSON has base64 text.
    """
    decimal = DYNAMODB_CONTEXT.create_decimal  # boto3's: exact, and it raises where boto3 does

    def value(attribute: Mapping[str, Any]) -> Any:
        for tag, raw in attribute.items():  # an AttributeValue has exactly one member
            if tag == "S":
                return raw
            if tag == "N":
                return decimal(raw)
            if tag == "M":
                return {k: value(v) for k, v in raw.items()}
            if tag == "L":
                return [value(v) for v in raw]
            if tag == "BOOL":
                return raw
            if tag == "NULL":
                return None
            if tag == "SS":
                return set(raw)
            if tag == "NS":
                return {decimal(n) for n in raw}
            if tag == "B":
                return Binary(blob(raw))
            if tag == "BS":
                return {Binary(blob(b)) for b in raw}
            raise TypeError(f"Dynamodb type {tag} is not supported")
        raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")

    return value


def _same(raw: bytes) -> bytes:
    return raw


_parsed_value = _deserialiser(_same)
_wire_value = _deserialiser(base64.b64decode)


# Both item functions answer strings, most of any item, inline: a third less time than a call
# per attribute.


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as botocore parsed it (``B`` values already bytes) to plain Python values."""
    return {k: v["S"] if "S" in v else _parsed_value(v) for k, v in item.items()}


def from_wire_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as DynamoDB's JSON has it (``B`` values base64 text) to plain Python values."""
    return {k: v["S"] if "S" in v else _wire_value(v) for k, v in item.items()}


# Set by scan_page and query_page around their own call, so any other Scan or Query made with
# the client (a test's, a tool's) gets botocore's usual answer.
_wire_items_wanted: ContextVar[bool] = ContextVar("svckit_wire_items_wanted", default=False)
# Where the hook leaves the unparsed items; not a DynamoDB field name, so it cannot collide.
WIRE_ITEMS = "svckit:WireItems"


def _leave_items_unparsed(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """botocore's ``before-parse`` hook for Scan and Query: take ``Items`` out of a successful
    answer before botocore's shape walk, and hand them on as the wire JSON under ``WIRE_ITEMS``.

    Errors, and answers without ``Items``, are left wholly to botocore. The rest of the body
    (``LastEvaluatedKey``, counts, consumed capacity) is still parsed the usual way, so the
    result differs from botocore's only in that one key.
    """
    if not _wire_items_wanted.get() or response_dict.get("status_code") != 200:
        return
    body = json.loads(response_dict["body"])
    items = body.pop("Items", None) if isinstance(body, dict) else None
    if items is None:
        return
    response_dict["body"] = json.dumps(body).encode()
    customized_response_dict[WIRE_ITEMS] = items


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def was_retried(exc: ClientError) -> bool:
    """True when botocore sent the call more than once: a failed condition may then be our own
    earlier attempt, applied, whose answer was lost (a delete finding nothing, say)."""
    return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) > 0


def raise_if_throttled(exc: ClientError) -> None:
    """Turn DynamoDB throttling that survived the retries into the contract's 429 (its
    ``Retry-After`` is added by ``svckit.web``), counted as a dependency failure."""
    if error_code(exc) in THROTTLING_CODES:
        overload.count(exc, overload.THROTTLED)
        raise TooManyRequestsError("the service is busy, retry after a short wait") from exc


# The one DynamoDB action each helper below performs: what a service's IAM policy must allow
# when its code calls the helper (the deploy tests hold each policy to exactly these).
HELPER_ACTIONS = {
    "put_new": "PutItem",
    "get": "GetItem",
    "scan_page": "Scan",
    "query_page": "Query",  # on an index: the policy names the index's ARN
    "update_once": "UpdateItem",  # TransactWriteItems is authorised as its inner UpdateItem
    "delete_where": "DeleteItem",  # and, for a keyed request, as its inner DeleteItem
}
# Stored on every item ``put_new`` inserts: which attempt wrote it (never shown to clients; the
# views pick their fields).
WRITE_TOKEN = "write_token"  # noqa: S105 (an attribute name, not a secret)


class ItemExistsError(Exception):
    """A conditional insert found its key taken."""


class ConditionFailedError(Exception):
    """A conditional write's condition did not hold; nothing was written. ``stored`` is the item
    as the condition saw it (empty when there was none), when the write asked for it."""

    def __init__(self, key: Mapping[str, str], stored: Mapping[str, Any] | None = None) -> None:
        super().__init__(dict(key))
        self.stored = dict(stored or {})


def put_new(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Insert ``item`` only if its ``key`` is free: one conditional PutItem, so two racing
    writers cannot both win and the loser never overwrites the winner. Returns what was stored
    (``None`` values are left out, not written as nulls).

    Safe to retry: when botocore re-sends the PutItem because the first answer was lost (a read
    timeout, a reset connection), the first attempt may already be stored, and the retry then
    finds the key taken. The item carries this call's ``WRITE_TOKEN``, and the failed condition
    returns the stored item (``ReturnValuesOnConditionCheckFailure``, no extra round trip): if
    it holds our token, the insert is ours and succeeded.
    """
    # A keyed request's token is the same on every attempt (svckit.idempotency), so a client's
    # retry after a 503 recognises its own stored insert, as botocore's own retry does.
    token = idempotency.write_token() or uuid.uuid4().hex
    try:
        client().put_item(
            TableName=table_name(),
            Item=to_item({**item, WRITE_TOKEN: token}),
            ConditionExpression="attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": key},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise_if_throttled(exc)
            raise
        stored = exc.response.get("Item", {})
        if stored.get(WRITE_TOKEN) != {"S": token}:
            raise ItemExistsError(item[key]) from exc
        # Ours, from an earlier attempt: what was stored then (its times), not this attempt's.
        return {k: v for k, v in from_item(stored).items() if k != WRITE_TOKEN}
    return {k: v for k, v in item.items() if v is not None}


def update_once(
    key: Mapping[str, str],
    expression: str,
    condition: str,
    names: Mapping[str, str],
    values: Mapping[str, Any],
) -> None:
    """Apply one UpdateItem exactly once, even when botocore retries it.

    An increment (``ADD points :p``) re-sent after a lost answer would add twice. Run as a
    one-item TransactWriteItems with a ``ClientRequestToken``, DynamoDB itself recognises the
    retry (same token and parameters within 10 minutes) and answers success without applying
    it again. A failed ``condition`` raises ConditionFailedError; a conflict with another
    transaction on the same item is the contract's 429 (retry shortly).
    """
    update = {
        "TableName": table_name(),
        "Key": {k: {"S": v} for k, v in key.items()},
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": dict(names),
        "ExpressionAttributeValues": to_item(values),
    }
    # A keyed request's token is the same on every attempt of it (svckit.idempotency): a client's
    # retry after a 503 within DynamoDB's 10 minutes is recognised as botocore's own is.
    token = idempotency.client_request_token(f"update:{expression}") or uuid.uuid4().hex
    try:
        client().transact_write_items(TransactItems=[{"Update": update}], ClientRequestToken=token)
    except ClientError as exc:
        if error_code(exc) == "TransactionCanceledException":
            _cancelled_for(exc)
            raise ConditionFailedError(key) from exc
        raise_if_throttled(exc)
        raise


def delete_where(
    key: Mapping[str, str],
    condition: str,
    names: Mapping[str, str],
    values: Mapping[str, Any] | None = None,
) -> None:
    """Delete the item at ``key`` if ``condition`` holds, else raise ConditionFailedError with the
    item as it stood (``ReturnValuesOnConditionCheckFailure``: no extra read to tell a missing
    item from one the condition refused).

    A repeat must not turn a delete that happened into a 404. When botocore re-sent the call, a
    failed condition over no item is our own first attempt's success. A client's retry after a
    503 is another request, though: for a keyed request (``Idempotency-Key``) the delete is a
    one-item TransactWriteItems whose ``ClientRequestToken`` is the same on every attempt, so
    DynamoDB answers the retry (within its 10 minutes) with the first attempt's success.
    """
    delete: dict[str, Any] = {
        "TableName": table_name(),
        "Key": {k: {"S": v} for k, v in key.items()},
        "ConditionExpression": condition,
        "ExpressionAttributeNames": dict(names),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if values:
        delete["ExpressionAttributeValues"] = to_item(values)
    # The item and table are in it too: one token is one set of parameters to DynamoDB, which
    # refuses a reused token with others (IdempotentParameterMismatch).
    token = idempotency.client_request_token(
        "delete:" + json.dumps([delete["TableName"], key, condition, values], sort_keys=True,
                               default=str)
    )  # fmt: skip
    try:
        if token is None:
            client().delete_item(**delete)
        else:
            client().transact_write_items(
                TransactItems=[{"Delete": delete}], ClientRequestToken=token
            )
    except ClientError as exc:
        code = error_code(exc)
        if code == "ConditionalCheckFailedException":
            stored = exc.response.get("Item") or {}
            if not stored and was_retried(exc):
                return  # our own earlier attempt deleted it; only its answer was lost
        elif code == "TransactionCanceledException":
            # A transaction botocore re-sent after a lost answer is recognised by its token and
            # answered with its success: a failed condition here is a real one.
            stored = _cancelled_for(exc).get("Item") or {}
        else:
            raise_if_throttled(exc)
            raise
        raise ConditionFailedError(key, from_item(stored)) from exc


def _cancelled_for(exc: ClientError) -> dict[str, Any]:
    """The failed condition of a cancelled one-item transaction; busy reasons are the contract's
    429 (counted, like any throttling), anything else is raised as it came."""
    reason = (exc.response.get("CancellationReasons") or [{}])[0]
    if reason.get("Code") == "ConditionalCheckFailed":
        return dict(reason)
    if reason.get("Code") in overload.BUSY_CANCELLATIONS:
        overload.count(exc, overload.THROTTLED)
        raise TooManyRequestsError("the item is busy, retry after a short wait") from exc
    raise exc


def get(key: Mapping[str, str]) -> dict[str, Any] | None:
    """One strongly consistent GetItem: readable as soon as the write that made it answered."""
    try:
        response = client().get_item(
            TableName=table_name(), Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True
        )
    except ClientError as exc:
        raise_if_throttled(exc)
        raise
    item = response.get("Item")
    return from_item(item) if item else None


def scan_page(
    limit: int,
    start_key: Mapping[str, str] | None,
    key: Sequence[str],
    projection: str | None = None,
    names: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Scan page with ``Limit``, never the whole table; DynamoDB's order, stable across
    pages. Returns the items and the string key (of the ``key`` attributes) to continue from,
    only when more items remain.

    DynamoDB returns ``LastEvaluatedKey`` whenever a Scan stops at ``Limit``, even when nothing
    is left, so a list whose length is a multiple of ``limit`` would end with a cursor to an
    empty page (moto hides this; DynamoDB Local shows it). Asking for one item more than the
    page holds answers "is there more?" in the same round trip: the extra item is dropped and
    the cursor is the key of the last item kept. A cursor without an extra item means DynamoDB
    stopped early (its 1 MB page limit), and is passed on as it is.
    """
    kwargs: dict[str, Any] = {"TableName": table_name(), "Limit": limit + 1}
    if projection:
        # The cursor is built from the last item kept, so the key must be read as well.
        kwargs["ProjectionExpression"] = ", ".join([projection, *key])
    if names:
        kwargs["ExpressionAttributeNames"] = dict(names)
    return _page(client().scan, kwargs, limit, start_key, key)


def query_page(
    index: str,
    key_condition: str,
    names: Mapping[str, str],
    values: Mapping[str, Any],
    limit: int,
    start_key: Mapping[str, str] | None,
    key: Sequence[str],
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """One Query page on the global secondary index ``index``, with ``Limit``: the items the
    ``key_condition`` selects, in the index's sort order, and the string key to continue from,
    only when more items remain. The same "one item more" trick as :func:`scan_page`, for the
    same reason (a Query stopped at ``Limit`` returns ``LastEvaluatedKey`` even when nothing is
    left).

    ``key`` must name the index's key attributes and the table's: that is what DynamoDB's
    ``ExclusiveStartKey`` on an index holds (index entries need not be unique), so the cursor
    built from the last item kept has all of them. The caller checks a client's ``start_key``
    against its own key condition: an index position outside the condition is DynamoDB's
    ValidationException, not a page.
    """
    kwargs: dict[str, Any] = {
        "TableName": table_name(),
        "IndexName": index,
        "KeyConditionExpression": key_condition,
        "ExpressionAttributeNames": dict(names),
        "ExpressionAttributeValues": to_item(values),
        "Limit": limit + 1,
    }
    return _page(client().query, kwargs, limit, start_key, key)


def _page(
    operation: Callable[..., dict[str, Any]],
    kwargs: dict[str, Any],
    limit: int,
    start_key: Mapping[str, str] | None,
    key: Sequence[str],
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """The part :func:`scan_page` and :func:`query_page` share: start where the cursor says,
    read the items on the fast path, and keep ``limit`` of the ``limit + 1`` asked for, the
    cursor being the key of the last one kept (or DynamoDB's own when it stopped early)."""
    if start_key:
        kwargs["ExclusiveStartKey"] = {k: {"S": v} for k, v in start_key.items()}
    wanted = _wire_items_wanted.set(True)
    try:
        response = operation(**kwargs)
    except ClientError as exc:
        raise_if_throttled(exc)
        raise
    finally:
        _wire_items_wanted.reset(wanted)
    if WIRE_ITEMS in response:
        items = [from_wire_item(i) for i in response[WIRE_ITEMS]]
    else:  # botocore parsed them after all (a Stubber's canned answer, say)
        items = [from_item(i) for i in response.get("Items", [])]
    if len(items) > limit:
        items = items[:limit]
        return items, {k: str(items[-1][k]) for k in key}
    last = response.get("LastEvaluatedKey")
    return items, ({k: v["S"] for k, v in last.items()} if last else None)
