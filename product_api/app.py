"""product_api: the products table (seeds 000-002).

Views stay thin: check the caller, validate with the contract's schema, make one call to the
table module, shape the answer. Tokens are verified with the public JWKS alone, so this service
accepts a user_api login without calling user_api and could never mint a token itself.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from chalice import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    Response,
    UnauthorizedError,
)
from chalice.app import DynamoDBEvent, SQSEvent

from chalicelib import accounts, products
from svckit import events, idempotency, metrics, openapi, validation
from svckit.errors import not_found
from svckit.pagination import page_response
from svckit.tokens import Principal
from svckit.web import Service

service = Service("product_api", Path(__file__).parent)
app = service.app

_DETAILS = {"price": validation.PRICE, "description": validation.DESCRIPTION}
# Seed 000's /add_product names its product; seed 002's POST /products may leave the id to us.
NEW_PRODUCT = validation.Schema(
    required={"product_id": validation.PRODUCT_ID, "product_name": validation.PRODUCT_NAME},
    optional=_DETAILS,
)
NEW_PRODUCT_ANY_ID = validation.Schema(
    required={"product_name": validation.PRODUCT_NAME},
    optional={"product_id": validation.PRODUCT_ID, **_DETAILS},
)
_CENT = Decimal("0.01")
ACCOUNT_DELETED = "token is invalid: its account was deleted"


def _price(amount: Decimal) -> int | float:
    """JSON has no decimal type: whole prices print as integers (``5``, not ``5.0``), others as
    floats, which round-trip exactly at two decimals and the contract's magnitudes."""
    if amount == amount.to_integral_value():
        return int(amount)
    return float(amount.quantize(_CENT, rounding=ROUND_HALF_UP))


# PRODUCT, as public_view builds it; the answers of the routes below are built from it.
PRODUCT = openapi.Model(
    "Product",
    {
        "type": "object",
        "required": ["product_id", "product_name", "created_by", "created_at"],
        "properties": {
            "product_id": openapi.rule_schema(validation.PRODUCT_ID),
            "product_name": openapi.rule_schema(validation.PRODUCT_NAME),
            "price": {"type": "number", "minimum": 0},
            "description": openapi.rule_schema(validation.DESCRIPTION),
            "created_by": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": False,
    },
)
PRODUCT_ADDED = openapi.announced("ProductAdded", "Product added successfully", "product", PRODUCT)
_ID = {"product_id": validation.PRODUCT_ID}
_ADDED = {201: PRODUCT_ADDED, 409: "a product with this product_id exists"}


def public_view(product: dict[str, Any]) -> dict[str, Any]:
    """PRODUCT as the contract shows it, fields in its order; absent options stay absent."""
    view: dict[str, Any] = {
        "product_id": product[products.KEY],
        "product_name": product["product_name"],
    }
    if product.get("price") is not None:
        view["price"] = _price(Decimal(product["price"]))
    if product.get("description") is not None:
        view["description"] = product["description"]
    view["created_by"] = product["created_by"]
    view["created_at"] = product["created_at"]
    return view


def _caller() -> Principal:
    """The verified caller, unless their account was deleted (``UserDeleted``, see accounts):
    its tokens still verify, and act for nobody. A token from before account ids is checked by
    its name. One GetItem, on the write routes only."""
    caller = service.require_principal()
    account = caller.account or accounts.legacy_key(caller.username)
    if accounts.is_revoked(account):
        raise UnauthorizedError(ACCOUNT_DELETED)
    return caller


def _add(schema: validation.Schema) -> Response:
    """Both creating routes: the caller first (401 before any 400), then the body, then one
    conditional write."""
    caller = _caller()
    body = schema.check(service.json_body())
    # Generated from the Idempotency-Key when there is one: a retry after an unknown outcome
    # (a 503) finds its own product rather than making a second.
    product_id = body.get("product_id") or idempotency.derived_id() or str(uuid.uuid4())
    try:
        product = products.create(
            product_id,
            body["product_name"],
            caller.username,
            price=body.get("price"),
            description=body.get("description"),
            created_by_account=caller.account,
        )
    except products.ProductExistsError as exc:
        raise ConflictError(f"product_id {product_id!r} already exists") from exc
    service.log.info("product added", product_id=product_id, created_by=caller.username)
    metrics.add(metrics.PRODUCTS_ADDED)
    return Response(
        body={"message": "Product added successfully", "product": public_view(product)},
        status_code=201,
    )


@app.route("/add_product", methods=["POST"])
@openapi.describe(summary="Add a product", body=NEW_PRODUCT, answers=_ADDED, auth="required")
def add_product() -> Response:
    return _add(NEW_PRODUCT)


@app.route("/products", methods=["POST"])
@openapi.describe(
    summary="Add a product; its id generated when absent",
    body=NEW_PRODUCT_ANY_ID,
    answers=_ADDED,
    auth="required",
)
def create_product() -> Response:
    return _add(NEW_PRODUCT_ANY_ID)


@app.route("/products", methods=["GET"])
@app.route("/get_products", methods=["GET"])
@openapi.describe(
    summary="Products, or one user's (created_by), a page at a time",
    answers={200: openapi.array_of(PRODUCT)},
    paged=True,
    query={"created_by": validation.USERNAME},
)
def list_products() -> Response:
    """Every product (one Scan page), or with ``?created_by=`` one user's (one Query page on the
    ``by_creator`` index). ``created_by`` matches as stored: the creator's username as they
    registered it, which is how their token names them."""
    created_by = (service.request.query_params or {}).get("created_by")
    if created_by is None:
        page = service.page(products.KEY_ATTRIBUTES)
        items, last_key = products.list_page(page)
    else:
        validation.USERNAME.check("created_by", created_by)
        page = service.page(products.BY_CREATOR_KEY_ATTRIBUTES)
        if page.start_key and page.start_key[products.CREATOR] != created_by:
            # Another user's cursor: DynamoDB would refuse the start key (a 500), not page.
            raise BadRequestError("cursor is invalid: pass back the X-Next-Cursor value unchanged")
        items, last_key = products.list_by_creator_page(created_by, page)
    return page_response([public_view(p) for p in items], last_key, page.limit)


@app.route("/products/{product_id}", methods=["GET"])
@openapi.describe(summary="One product", answers={200: PRODUCT}, path=_ID)
def get_product(product_id: str) -> dict[str, Any]:
    product = products.get(validation.path_value(validation.PRODUCT_ID, product_id, "product"))
    if product is None:
        raise not_found("product", product_id)
    return public_view(product)


@app.route("/products/{product_id}", methods=["DELETE"])
@openapi.describe(
    summary="Delete a product (its creator or an admin)",
    answers={204: None, 403: "only the product's creator or an admin may delete it"},
    auth="required",
    path=_ID,
)
def delete_product(product_id: str) -> Response:
    """204 for its creator or an admin, 403 for anyone else, 404 when there is no such product;
    the caller first (401 before anything else), then one conditional delete."""
    caller = _caller()
    product_id = validation.path_value(validation.PRODUCT_ID, product_id, "product")
    try:
        products.delete(
            product_id, caller.username, caller.is_user, caller.is_admin, caller.account
        )
    except products.ProductNotFoundError as exc:
        raise not_found("product", product_id) from exc
    except products.NotCreatorError as exc:
        raise ForbiddenError("only the product's creator or an admin may delete it") from exc
    service.log.info("product deleted", product_id=product_id, deleted_by=caller.username)
    metrics.add(metrics.PRODUCTS_DELETED)
    return Response(body="", status_code=204)


# A key no product can have (``#`` is outside the product_id rule): the readiness read finds
# nothing, and costs one small GetItem, an action the function's policy already allows.
READINESS_KEY = "#readiness"


@app.route("/health", methods=["GET"])
@openapi.describe(
    summary="Liveness; with ready=1 readiness (the table and the keys)",
    answers={200: openapi.HEALTH, 503: "not ready: the failing checks are named"},
    query={"ready": None},
)
def health() -> Response | dict[str, Any]:
    """Liveness, free; with ``?ready=1`` readiness: the products table answers a read and the
    token key set loads (gateway_api's ``/health`` asks this)."""
    if not service.wants_readiness():
        return service.health()
    return service.readiness({"table": lambda: products.get(READINESS_KEY)})


# -- events (svckit.events; wired by tools/topology.py, not by the decorators' arguments) --


def change_event(change: events.Change) -> tuple[str, dict[str, Any]] | None:
    """What a change of the products table announces: a new product ``ProductAdded`` (the
    public view, and the creator's account so points go to that registration), a removed one
    ``ProductDeleted``. Updates announce nothing (products are not updated)."""
    if change.name == "INSERT" and change.new:
        data = {**public_view(change.new), products.CREATOR_ACCOUNT: _account_of(change.new)}
        return events.PRODUCT_ADDED, data
    if change.name == "REMOVE" and change.old:
        old = change.old
        return events.PRODUCT_DELETED, {
            "product_id": old[products.KEY],
            "created_by": old.get(products.CREATOR),
            products.CREATOR_ACCOUNT: _account_of(old),
        }
    return None


def _account_of(product: dict[str, Any]) -> str | None:
    account = product.get(products.CREATOR_ACCOUNT)
    return account if isinstance(account, str) else None


@app.on_dynamodb_record(stream_arn=events.STREAM_ARN_PLACEHOLDER)
def relay_product_changes(event: DynamoDBEvent) -> dict[str, Any]:
    """The products table's stream, relayed to the bus: the outbox of this service's events."""
    records = event.to_dict()["Records"]
    return events.relay(records, events.PRODUCT_SOURCE, change_event, service.log)


@app.on_sqs_message(queue_arn=events.QUEUE_ARN_PLACEHOLDER)
def on_user_events(event: SQSEvent) -> dict[str, Any]:
    """product_api's queue of user events: a deleted account loses its products and tokens."""
    handlers = {events.USER_DELETED: remove_account}
    return events.consume(event.to_dict()["Records"], handlers, service.log)


def remove_account(event: events.Event) -> str:
    """Refuse the account's tokens from now on, then delete its products, then record the event.

    Not one transaction (an account may have any number of products), so each step is safe to
    repeat instead, and the event is recorded only once all of them are done: a failure half-way
    leaves it unrecorded, and its redelivery finishes the job. The tokens are refused first, so
    no product can be added under the account while its products are being deleted.
    """
    username = event.data.get("username")
    account = event.data.get("account_id")
    if not isinstance(username, str) or not isinstance(account, str | None):
        raise events.EventError("UserDeleted has no username")
    if events.was_applied(event):
        return "duplicate"
    accounts.revoke(account or accounts.legacy_key(username), username, event.id)
    deleted = products.delete_all_of(username, account)
    service.log.info("account removed", username=username, products_deleted=deleted)
    if deleted:
        # Deleted all the same, by the cascade rather than by a request: counted with them.
        metrics.add(metrics.PRODUCTS_DELETED, deleted)
    return events.APPLIED if events.record_once(event, events.APPLIED) else "duplicate"
