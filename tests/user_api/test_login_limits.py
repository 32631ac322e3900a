"""Failed logins are limited per name and per source address, in short fixed windows (issue 7).

API Gateway's stage throttling is per method, so without these limits one client could spend the
whole stage's rate on guessing one user's password. The counters live in user_api's second table;
the clock is injected, so a window ends without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chalice.local import LambdaEventConverter

from svckit import dynamo
from tests.conftest import post_json
from tests.support.apps import load_app
from tools import services

ATTEMPTS_TABLE = services.USER.stage_env("local")["LOGIN_ATTEMPTS_TABLE"]
PASSWORD = "correct-horse-1234"
WRONG = "wrong-guess-4242"
WINDOW_START = 1_700_000_100  # a multiple of 300: the first second of a five-minute window
ATTACKER = "198.51.100.7"
BYSTANDER = "203.0.113.20"


@pytest.fixture
def limits() -> Any:
    """user_api's login limiter module, as the loaded app uses it."""
    return load_app(services.USER).login_limits


@pytest.fixture
def clock(limits: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The limiter's clock, set by the test: ``clock[0]`` is now."""
    now = [float(WINDOW_START + 10)]
    monkeypatch.setattr(limits, "clock", lambda: now[0])
    return now


@pytest.fixture
def attempt(user_client: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """POST /login as API Gateway would send it from ``source`` (its ``identity.sourceIp``)."""

    def _attempt(username: str, password: str, source: str = ATTACKER) -> Any:
        monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", source)
        return post_json(user_client, "/login", {"username": username, "password": password})

    return _attempt


def scan_counters(tables: Any) -> list[dict[str, Any]]:
    return list(tables.scan(TableName=ATTEMPTS_TABLE, ConsistentRead=True)["Items"])


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Argon2 verification the login makes."""
    passwords = load_app(services.USER).passwords
    calls: list[str] = []
    real_verify = passwords.PasswordHasher.verify

    def counting_verify(self: Any, hash_: str, password: str) -> bool:
        calls.append(hash_)
        return bool(real_verify(self, hash_, password))

    monkeypatch.setattr(passwords.PasswordHasher, "verify", counting_verify)
    return calls


def assert_limited(response: Any, field_words: str) -> int:
    """A 429 in the contract's shape, with a whole number of seconds in ``Retry-After``."""
    assert response.status_code == 429, response.body
    body = response.json_body
    assert body["Code"] == "TooManyRequestsError"
    assert set(body) == {"Code", "Message"}
    assert field_words in body["Message"]
    assert response.headers["X-Request-Id"]
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert str(int(retry_after)) in body["Message"]
    return int(retry_after)


def test_five_failures_for_a_name_make_the_next_try_429_before_the_password_is_checked(
    register, attempt, clock, argon2_calls, tables
):
    register()
    read_calls: list[dict[str, Any]] = []
    client = dynamo.client()
    real_batch_get = client.batch_get_item

    def counting_batch_get(**kwargs: Any) -> Any:
        read_calls.append(kwargs)
        return real_batch_get(**kwargs)

    client.batch_get_item = counting_batch_get
    try:
        for _ in range(5):
            response = attempt("john_doe", WRONG)
            assert response.status_code == 401
            assert response.json_body["Message"] == "Invalid username or password"
        argon2_calls.clear()
        # Even the right password: answering it differently would tell a guesser it was right.
        refused = attempt("JOHN_DOE", PASSWORD)
    finally:
        del client.batch_get_item
    assert assert_limited(refused, "username") == 290  # the rest of the five-minute window
    assert "at most 5 in 300 seconds" in refused.json_body["Message"]
    assert argon2_calls == []  # refused before any Argon2 work
    # One read of both counters per login, and nothing else read from their table.
    assert len(read_calls) == 6
    for call in read_calls:
        assert list(call["RequestItems"]) == [ATTEMPTS_TABLE]
        assert len(call["RequestItems"][ATTEMPTS_TABLE]["Keys"]) == 2
        assert call["RequestItems"][ATTEMPTS_TABLE]["ConsistentRead"] is True
    counts = sorted(int(item["attempts"]["N"]) for item in scan_counters(tables))
    assert counts == [5, 5]  # the name's and the source's; the refused try added nothing


def test_a_different_name_from_another_source_is_unaffected(register, attempt, clock):
    register()
    register("alice")
    for _ in range(5):
        assert attempt("john_doe", WRONG, ATTACKER).status_code == 401
    assert attempt("alice", PASSWORD, BYSTANDER).status_code == 200
    assert attempt("alice", WRONG, BYSTANDER).status_code == 401
    # The attacker's source has 5 failures, below its limit of 20: other names still answer.
    assert attempt("alice", PASSWORD, ATTACKER).status_code == 200
    # The name's limit holds from every source (the lock-out trade-off, see docs/login-limits.md).
    assert_limited(attempt("john_doe", PASSWORD, BYSTANDER), "username")


def test_one_source_is_limited_across_names(register, attempt, clock):
    register()
    for i in range(20):  # 5 names, 4 failures each: no name reaches its own limit of 5
        assert attempt(f"guess_{i % 5}", WRONG, ATTACKER).status_code == 401, i
    refused = attempt("john_doe", PASSWORD, ATTACKER)
    assert_limited(refused, "address")
    assert "at most 20 in 300 seconds" in refused.json_body["Message"]
    assert attempt("john_doe", PASSWORD, BYSTANDER).status_code == 200


def test_the_limit_ends_with_its_window(register, attempt, clock, tables):
    register()
    for _ in range(5):
        assert attempt("john_doe", WRONG).status_code == 401
    clock[0] = WINDOW_START + 299.2
    assert assert_limited(attempt("john_doe", PASSWORD), "username") == 1  # rounded up
    clock[0] = WINDOW_START + 300  # the next window: its counters start from nothing
    assert attempt("john_doe", PASSWORD).status_code == 200
    # Failures count again from zero in the new window.
    for _ in range(4):
        assert attempt("john_doe", WRONG).status_code == 401
    assert attempt("john_doe", PASSWORD).status_code == 200
    # Each counter expires (DynamoDB's TTL) at the end of its own window.
    expiries = {int(item["expires_at"]["N"]) for item in scan_counters(tables)}
    assert expiries == {WINDOW_START + 300, WINDOW_START + 600}


def test_a_correct_password_is_not_counted(register, attempt, clock, tables):
    register()
    for _ in range(6):
        assert attempt("john_doe", PASSWORD).status_code == 200
    assert scan_counters(tables) == []


def test_a_malformed_login_is_not_counted(attempt, clock, tables):
    response = attempt("john_doe", 12345)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert scan_counters(tables) == []


def test_counters_never_hold_the_password_or_the_name_in_clear(register, attempt, clock, tables):
    """A password typed into the name field is a common slip; the name is kept only as a digest,
    so the counters hold no password in either field, and no address in clear either."""
    register()
    slip = "MyS3cret.Pass"  # a password typed as the name: it fits the name rule
    assert attempt(slip, WRONG).status_code == 401
    assert attempt("john_doe", "hunter2-typed-wrong").status_code == 401
    items = scan_counters(tables)
    assert len(items) == 3  # the slip's, john_doe's and the source's
    stored = json.dumps(items)
    for secret in (slip, slip.lower(), WRONG, "hunter2-typed-wrong", "john_doe", ATTACKER):
        assert secret not in stored
    for item in items:
        assert set(item) == {"counter_key", "attempts", "expires_at"}


def test_local_counter_table_has_time_to_live_on_expires_at(tables):
    ttl = tables.describe_time_to_live(TableName=ATTEMPTS_TABLE)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == "expires_at"


def test_a_failure_that_cannot_be_counted_is_not_answered_as_a_plain_401(
    register, attempt, clock, monkeypatch, tables
):
    """If the counter's write fails, the guess must not come back as an ordinary 401: that would
    be an uncounted guess. DynamoDB throttling gives the contract's 429."""
    from botocore.exceptions import ClientError

    register()
    client = dynamo.client()

    def throttled_update_item(**kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem"
        )

    monkeypatch.setattr(client, "update_item", throttled_update_item)
    response = attempt("john_doe", WRONG)
    assert response.status_code == 429
    assert response.json_body["Code"] == "TooManyRequestsError"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("LOGIN_FAILURES_PER_NAME", "0"),
        ("LOGIN_FAILURES_PER_SOURCE", "-1"),
        ("LOGIN_FAILURE_WINDOW_SECONDS", "86400"),  # a day-long lock-out is a weapon
        ("LOGIN_FAILURE_WINDOW_SECONDS", "0"),
    ],
)
def test_a_stage_cannot_turn_the_limits_off_or_make_the_lock_out_long(
    limits, monkeypatch, setting, value
):
    monkeypatch.setenv(setting, value)
    with pytest.raises(limits.config.ConfigError, match=f"{setting} must be between"):
        limits.limits()


def test_a_stage_may_tighten_the_limits(register, attempt, clock, monkeypatch):
    register()
    monkeypatch.setenv("LOGIN_FAILURES_PER_NAME", "2")
    monkeypatch.setenv("LOGIN_FAILURE_WINDOW_SECONDS", "60")
    assert attempt("john_doe", WRONG).status_code == 401
    assert attempt("john_doe", WRONG).status_code == 401
    refused = attempt("john_doe", PASSWORD)
    # 10 s into a 300 s window is 10 s into a 60 s window too: 50 s remain.
    assert assert_limited(refused, "at most 2 in 60 seconds") == 50


# --- the client behind a proxy (gateway_api sends the caller's address in X-Forwarded-For) ---

GATEWAY = "10.0.0.5"  # the gateway's own address, the immediate source of every login it sends


@pytest.fixture
def counters(limits: Any, clock: list[float], tables: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The limiter called as user_api's login view calls it, with the local stage's table."""
    monkeypatch.setenv("LOGIN_ATTEMPTS_TABLE", ATTEMPTS_TABLE)
    return limits


def fail(counters: Any, times: int, source: str, forwarded_for: str | None, name: str = "") -> None:
    for i in range(times):
        counters.record_failure(name or f"guess_{i % 5}", source, forwarded_for)


def test_clients_behind_the_gateway_are_counted_apart(counters):
    """20 failures from one client through the gateway limit that client, not the others."""
    fail(counters, 20, GATEWAY, ATTACKER)

    refused = counters.check("john_doe", GATEWAY, ATTACKER)
    assert refused is not None
    assert refused.scope == "source"
    assert counters.check("john_doe", GATEWAY, BYSTANDER) is None
    assert counters.check("john_doe", GATEWAY, None) is None  # the gateway's own counter


def test_only_the_first_forwarded_address_counts(counters):
    """Proxies append; the first entry is what the gateway set (the caller it saw)."""
    fail(counters, 20, GATEWAY, f"{ATTACKER}, 192.0.2.1")

    assert counters.check("john_doe", GATEWAY, f"{ATTACKER}, 192.0.2.99") is not None
    assert counters.check("john_doe", GATEWAY, f" {ATTACKER} ") is not None


def test_a_direct_caller_can_only_split_its_own_counter(counters):
    """A forged X-Forwarded-For names a counter keyed on the forger's own address too: it can
    neither use up another address's counter nor reach the gateway's clients' ones, and the
    per-name limit binds whatever it writes in the header."""
    fail(counters, 20, ATTACKER, BYSTANDER)  # pretending to be the bystander

    assert counters.check("john_doe", ATTACKER, BYSTANDER) is not None  # its own, limited
    assert counters.check("john_doe", BYSTANDER, None) is None  # the real bystander, direct
    assert counters.check("john_doe", GATEWAY, BYSTANDER) is None  # ... and through the gateway
    for i in range(5):
        counters.record_failure("john_doe", ATTACKER, f"192.0.2.{i}")  # a fresh header each time
    refused = counters.check("john_doe", ATTACKER, "192.0.2.200")
    assert refused is not None
    assert refused.scope == "username"


@pytest.mark.parametrize("header", [None, "", "not-an-address", ATTACKER, f"{ATTACKER}, 1.2.3.4"])
def test_a_missing_unusable_or_self_naming_header_is_the_address_alone(counters, header):
    """Only an address other than the source's own splits the count: garbage, or the caller's
    own address (API Gateway appends it when the caller sent no header), is one counter."""
    fail(counters, 20, ATTACKER, None)

    refused = counters.check("john_doe", ATTACKER, header)
    assert refused is not None
    assert refused.scope == "source"


def test_the_forwarded_address_is_stored_only_as_part_of_a_digest(counters, tables):
    counters.record_failure("john_doe", GATEWAY, ATTACKER)
    stored = json.dumps(scan_counters(tables))
    for clear in (GATEWAY, ATTACKER, "john_doe"):
        assert clear not in stored


def test_the_login_view_counts_a_forwarded_client_apart(register, clock, user_client, monkeypatch):
    """Through user_api's view: 20 failures from one client behind the gateway's address leave
    the gateway's other clients free."""
    register()
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", GATEWAY)

    def login(username: str, password: str, client: str) -> Any:
        body = {"username": username, "password": password}
        return post_json(user_client, "/login", body, headers={"X-Forwarded-For": client})

    for i in range(20):
        assert login(f"guess_{i % 5}", WRONG, ATTACKER).status_code == 401
    assert_limited(login("john_doe", PASSWORD, ATTACKER), "address")
    assert login("john_doe", PASSWORD, BYSTANDER).status_code == 200
