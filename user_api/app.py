"""user_api: registration, login and the users table (seeds 000-003).

Views stay thin: validate with the contract's schema, make one call to the table module, shape the
answer. Login is the only place a token is issued, so only this service can read the signing key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from chalice import (
    ConflictError,
    ForbiddenError,
    Response,
    TooManyRequestsError,
    UnauthorizedError,
)
from chalice.app import DynamoDBEvent, SQSEvent

from chalicelib import login_limits, passwords, users
from svckit import config, dynamo, events, keys, metrics, openapi, validation
from svckit.errors import error_response, not_found
from svckit.pagination import page_response
from svckit.tokens import Principal, TokenIssuer
from svckit.web import Service

service = Service("user_api", Path(__file__).parent)
app = service.app

REGISTRATION = validation.Schema(
    required={"username": validation.USERNAME, "password": validation.PASSWORD},
    optional={"email": validation.EMAIL},
)
# Login checks only shape: a name or password that breaks the registration rules cannot match,
# and it gets the same 401 as any other failed login rather than a hint.
CREDENTIALS = validation.Schema(
    required={"username": validation.Text(1, 256), "password": validation.Text(1, 1024)}
)
POINTS_GRANT = validation.Schema(required={"points": validation.IntRange(1, 1000)})
BAD_CREDENTIALS = "Invalid username or password"
CALLER_GONE = "token is invalid: its user does not exist"
ADMIN_ROLE = "admin"
# What each product added earns its creator (a stage setting; API.md's default).
POINTS_PER_PRODUCT = "POINTS_PER_PRODUCT"
DEFAULT_POINTS_PER_PRODUCT = 10


@functools.lru_cache(maxsize=2)
def _issuer(key_ref: str, ttl_seconds: int) -> TokenIssuer:
    return TokenIssuer(keys.resolve(key_ref, service.project_dir), ttl_seconds)


def token_issuer() -> TokenIssuer:
    return _issuer(config.require("JWT_SIGNING_KEY"), config.integer("TOKEN_TTL_SECONDS", 3600))


# USER, as public_view builds it; the answers of the routes below are built from it.
USER = openapi.Model(
    "User",
    {
        "type": "object",
        "required": ["username", "points", "status", "created_at"],
        "properties": {
            "username": openapi.rule_schema(validation.USERNAME),
            "points": {"type": "integer", "minimum": 0},
            "status": {"type": "string", "enum": ["Bronze", "Silver", "Gold"]},
            "created_at": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "description": "only to the user themself"},
        },
        "additionalProperties": False,
    },
)
REGISTERED = openapi.announced("UserRegistered", "User registered successfully", "user", USER)
LOGGED_IN = openapi.Model(
    "LoginAnswer",
    {
        "type": "object",
        "required": ["message", "access_token", "token_type", "expires_in"],
        "properties": {
            "message": {"const": "Login successful"},
            "access_token": {"type": "string", "description": "a signed JWT"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
    },
)
_NAME = {"username": validation.USERNAME}


def public_view(user: dict[str, Any], viewer: Principal | None) -> dict[str, Any]:
    """USER as the contract shows it: never the hash, and the email only to its owner."""
    view = {
        "username": user["username"],
        "points": int(user.get("points", 0)),
        "status": user.get("status", users.status_for(0)),
        "created_at": user["created_at"],
    }
    if viewer is not None and _is_account(viewer, user) and user.get("email"):
        view["email"] = user["email"]
    return view


def _is_account(caller: Principal, record: dict[str, Any]) -> bool:
    """Whether ``record`` is the account the token was issued to: the same name (in any case)
    and the same registration of it. A name deleted and registered again has a new
    ``account_id``, so the old registration's tokens do not speak for it; a row from before
    account ids existed matches only tokens without the claim."""
    return caller.is_user(record["username"]) and caller.account == record.get(users.ACCOUNT)


def _caller_record(caller: Principal) -> dict[str, Any]:
    """The caller's own row, read now (one consistent GetItem); 401 when the token no longer
    stands for a user: no row under its name, or a row of a later registration of the name."""
    record = users.get(caller.username)
    if record is None or not _is_account(caller, record):
        raise UnauthorizedError(CALLER_GONE)
    return record


def _require_admin(caller: Principal, refusal: str) -> None:
    """Refuse unless the caller's row says admin now; one consistent GetItem.

    A token's ``roles`` are what the table said at login, frozen for the token's lifetime: a
    role removed since, or a user removed since (or never stored), would keep their rights until
    it expired. So the token only says who is calling; what they may do is read from the table
    at the moment they do it, and a caller without a row (or whose name now belongs to a later
    registration) acts for nobody (401, like any token that no longer stands for a user).
    """
    record = _caller_record(caller)
    if ADMIN_ROLE not in record.get("roles", ()):
        raise ForbiddenError(refusal)


def _username(raw: str) -> str:
    return validation.path_value(validation.USERNAME, raw, "user")


@app.route("/register", methods=["POST"])
@app.route("/users", methods=["POST"])
@app.route("/user", methods=["POST"])
@openapi.describe(
    summary="Register a user",
    body=REGISTRATION,
    answers={201: REGISTERED, 409: "username is already taken"},
)
def register() -> Response:
    body = REGISTRATION.check(service.json_body())
    password_hash = passwords.hash_password(body["password"])
    try:
        user = users.create(body["username"], password_hash, body.get("email"))
    except users.UserExistsError as exc:
        raise ConflictError("username is already taken") from exc
    service.log.info("user registered", username=user["username"])
    metrics.add(metrics.USERS_REGISTERED)
    owner = Principal(username=user["username"], roles=frozenset(), account=user[users.ACCOUNT])
    return Response(
        body={"message": "User registered successfully", "user": public_view(user, owner)},
        status_code=201,
    )


def _upgrade_hash(username: str, stored: str, password: str) -> None:
    """Store the password under the stage's current Argon2 parameters, at best effort.

    The caller has already proven the password, and the old hash keeps working: the upgrade is an
    optimisation that the next login retries, so no failure of its write (a concurrent change,
    throttling, a timeout, any AWS error) may turn a correct login into a 429 or a 500. Only the
    error's kind is logged, never the password, a hash or AWS's message (which may quote values).
    """
    try:
        users.replace_hash(username, stored, passwords.hash_password(password))
    except users.StaleReadError:
        service.log.info("rehash skipped: password changed concurrently", username=username)
    except (ClientError, BotoCoreError, TooManyRequestsError) as exc:
        code = dynamo.error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        service.log.warning("rehash failed; the old hash stays", username=username, error=code)


def _source_address() -> str:
    """The immediate caller's address as API Gateway saw it (``identity.sourceIp``).

    ``X-Forwarded-For`` is passed to the limiter beside it, never instead of it: anyone calling
    this API directly can write that header, so it may only narrow this address (a client behind
    gateway_api), never replace it (see login_limits and docs/login-limits.md).
    """
    identity = service.request.context.get("identity") or {}
    return str(identity.get("sourceIp") or "unknown")


@app.route("/login", methods=["POST"], idempotent=False)
@openapi.describe(
    summary="Log in: a token for the right password",
    body=CREDENTIALS,
    answers={200: LOGGED_IN, 401: "Invalid username or password", 429: "too many failed logins"},
)
def login() -> Response | dict[str, Any]:
    """Issue a token for the right password, within the failed-login limits (login_limits)."""
    body = CREDENTIALS.check(service.json_body())
    source = _source_address()
    forwarded_for = service.request.headers.get("x-forwarded-for")
    refusal = login_limits.check(body["username"], source, forwarded_for)
    if refusal is not None:
        service.log.warning(
            "login refused: too many failed logins",
            limit=refusal.scope,
            source=source,
            client=login_limits.forwarded_client(source, forwarded_for),
            retry_after=refusal.retry_after,
        )
        metrics.add(metrics.LOGINS_THROTTLED)
        return error_response(
            TooManyRequestsError(refusal.message),
            headers={"Retry-After": str(refusal.retry_after)},
        )
    user = users.get(body["username"])
    stored = user.get("password_hash") if user else None
    if not passwords.verify(stored, body["password"]) or user is None:
        login_limits.record_failure(body["username"], source, forwarded_for)
        metrics.add(metrics.LOGINS_FAILED)
        raise UnauthorizedError(BAD_CREDENTIALS)
    if passwords.needs_rehash(stored):
        _upgrade_hash(user["username"], stored, body["password"])
    issuer = token_issuer()
    token = issuer.issue(user["username"], user.get("roles", ()), user.get(users.ACCOUNT))
    return {
        "message": "Login successful",
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": issuer.ttl_seconds,
    }


@app.route("/users", methods=["GET"])
@openapi.describe(
    summary="Users, a page at a time", answers={200: openapi.array_of(USER)}, paged=True
)
def list_users() -> Response:
    page = service.page(users.KEY_ATTRIBUTES)
    items, last_key = users.list_page(page)
    return page_response([public_view(u, None) for u in items], last_key, page.limit)


@app.route("/users/{username}", methods=["GET"])
@app.route("/user/{username}", methods=["GET"])
@openapi.describe(summary="One user", answers={200: USER}, auth="optional", path=_NAME)
def get_user(username: str) -> dict[str, Any]:
    viewer = service.principal(required=False)
    user = users.get(_username(username))
    if user is None:
        raise not_found("user", username)
    return public_view(user, viewer)


@app.route("/user/promote/{username}", methods=["PUT"])
@openapi.describe(
    summary="Recompute a user's status from their points",
    answers={200: USER, 403: "only the user or an admin may promote a user"},
    auth="required",
    path=_NAME,
)
def promote(username: str) -> dict[str, Any]:
    """Recompute status from points (seed 003). Users may promote themselves; admins anyone,
    with the admin role read from the table, not from the token (see ``_require_admin``)."""
    caller = service.require_principal()
    if not caller.is_user(username):
        _require_admin(caller, "only the user or an admin may promote a user")
    for _ in range(3):
        user = users.get(_username(username))
        if caller.is_user(username) and (user is None or not _is_account(caller, user)):
            # promoting themselves: they do not exist, or the name is a later registration's
            raise UnauthorizedError(CALLER_GONE)
        if user is None:
            raise not_found("user", username)
        try:
            return public_view(users.set_status(username, int(user.get("points", 0))), caller)
        except users.StaleReadError:
            continue  # points changed between the read and the write: read again
    raise ConflictError("user was being updated concurrently, try again")


@app.route("/users/{username}/points", methods=["POST"])
@openapi.describe(
    summary="An admin grants a user points",
    body=POINTS_GRANT,
    answers={200: USER, 403: "only an admin may grant points, never to themselves"},
    auth="required",
    path=_NAME,
)
def grant_points(username: str) -> dict[str, Any]:
    """Admins grant points; nobody can raise their own. The role is checked in the table, so a
    revoked admin's unexpired token grants nothing (see ``_require_admin``)."""
    caller = service.require_principal()
    _require_admin(caller, "only an admin may grant points")
    if caller.is_user(username):
        raise ForbiddenError("a user may not grant points to themselves")
    body = POINTS_GRANT.check(service.json_body())
    try:
        user = users.add_points(_username(username), body["points"])
    except users.UserNotFoundError as exc:
        raise not_found("user", username) from exc
    service.log.info("points granted", username=user["username"], points=body["points"])
    metrics.add(metrics.POINTS_GRANTED, body["points"])
    return public_view(user, caller)


@app.route("/users/{username}", methods=["DELETE"])
@openapi.describe(
    summary="Delete a user (themself or an admin)",
    answers={204: None, 403: "only the user or an admin may delete a user"},
    auth="required",
    path=_NAME,
)
def delete_user(username: str) -> Response:
    """Delete a user: the user themself or an admin (the role read from the table, like every
    admin action); 403 anyone else, 404 an unknown name, 204 with an empty body."""
    caller = service.require_principal()
    name = _username(username)
    if caller.is_user(name):
        # Deleting oneself is deleting the registration the token stands for: held to it in the
        # write itself (no read first, which a keyed retry of a delete that happened would fail:
        # its row is gone), so between any check and the delete nothing can change hands.
        account = caller.account
    elif ADMIN_ROLE in _caller_record(caller).get("roles", ()):
        account = users.ANY_ACCOUNT
    else:
        raise ForbiddenError("only the user or an admin may delete a user")
    try:
        users.delete(name, account)
    except users.UserNotFoundError as exc:
        if caller.is_user(name):
            raise UnauthorizedError(CALLER_GONE) from exc
        raise not_found("user", username) from exc
    except users.AccountChangedError as exc:
        raise UnauthorizedError(CALLER_GONE) from exc
    service.log.info("user deleted", username=name, by=caller.username)
    metrics.add(metrics.USERS_DELETED)
    return Response(body="", status_code=204)


# A key no user can have (``#`` is outside the username rule): the readiness read finds nothing,
# and costs one small GetItem, an action the function's policy already allows on its table.
READINESS_KEY = "#readiness"


@app.route("/health", methods=["GET"])
@openapi.describe(
    summary="Liveness; with ready=1 readiness (the table and the keys)",
    answers={200: openapi.HEALTH, 503: "not ready: the failing checks are named"},
    query={"ready": None},
)
def health() -> Response | dict[str, Any]:
    """Liveness, free; with ``?ready=1`` readiness: the users table answers a read and the
    signing key loads (gateway_api's ``/health`` asks this)."""
    if not service.wants_readiness():
        return service.health()
    return service.readiness(
        {"table": lambda: users.get(READINESS_KEY), "signing_key": token_issuer}
    )


# -- events (svckit.events; wired by tools/topology.py, not by the decorators' arguments) --


@app.on_dynamodb_record(stream_arn=events.STREAM_ARN_PLACEHOLDER)
def relay_user_changes(event: DynamoDBEvent) -> dict[str, Any]:
    """The users table's stream, relayed to the bus: the outbox of this service's events."""
    records = event.to_dict()["Records"]
    return events.relay(records, events.USER_SOURCE, users.change_event, service.log)


@app.on_sqs_message(queue_arn=events.QUEUE_ARN_PLACEHOLDER)
def on_product_events(event: SQSEvent) -> dict[str, Any]:
    """user_api's queue of product events: every product added earns its creator points."""
    handlers = {events.PRODUCT_ADDED: grant_product_points}
    return events.consume(event.to_dict()["Records"], handlers, service.log)


def grant_product_points(event: events.Event) -> str:
    """Add ``POINTS_PER_PRODUCT`` to the creator of the product, once per event.

    The points and the event's record are one transaction, so a redelivered event changes
    nothing. A creator who no longer exists, or whose name is now another registration's,
    receives nothing; the event is then recorded as skipped, so it is not retried for ever.
    """
    creator = event.data.get("created_by")
    account = event.data.get("created_by_account")
    if not isinstance(creator, str) or not isinstance(account, str | None):
        raise events.EventError("ProductAdded has no created_by name")
    points = config.integer(POINTS_PER_PRODUCT, DEFAULT_POINTS_PER_PRODUCT)
    try:
        events.apply_once(event, [users.points_change(creator, points, account)], events.APPLIED)
    except events.AlreadyApplied:
        return "duplicate"
    except events.ConditionNotMet:
        return "skipped: no such account" if events.record_once(event, "skipped") else "duplicate"
    metrics.add(metrics.POINTS_GRANTED, points)
    return events.APPLIED
