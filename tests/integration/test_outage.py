"""The gateway when product_api is down or hung: fast 503/504, user routes unaffected.

Real processes make this honest: a killed service refuses connections and a stopped (SIGSTOP)
one accepts them and never answers, which is what the gateway's pooled client and its timeouts
meet in practice and what an in-process stub cannot reproduce. Each test brings product_api back
before it ends, so the session's system is whole for the tests after it.
"""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Callable, Iterator

import pytest

from svckit import aws
from tests.support.system import Reply, bearer, call, get, post, wait_until
from tools import services
from tools.localrun import LocalSystem

pytestmark = pytest.mark.integration

FAST_SECONDS = 3.0
PASSWORD = "correct-horse-1234"


def _assert_unavailable(reply: Reply, code: int = 503) -> None:
    assert reply.status == code, reply
    body = reply.json()
    assert set(body) >= {"Code", "Message"}, body
    assert "Traceback" not in reply.body.decode()


def _user_routes_work(gateway: str, unique: Callable[[str], str]) -> None:
    name = unique("outage")
    registered = post(gateway, "/register_user", {"username": name, "password": PASSWORD})
    assert registered.status == 201, registered
    login = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert login.status == 200, login
    assert get(gateway, f"/users/{name}").status == 200


@pytest.fixture
def product_api_killed(system: LocalSystem, gateway: str) -> Iterator[None]:
    """product_api crashes (SIGKILL: no graceful close); restarted afterwards."""
    system.stop_service(services.PRODUCT, signal.SIGKILL)
    try:
        yield
    finally:
        system.start_service(services.PRODUCT)
        # The gateway's pool must drop the dead connections and reach the new process.
        wait_until(lambda: get(gateway, "/get_products").status == 200, timeout=10)


@pytest.fixture
def product_api_hung(system: LocalSystem, gateway: str) -> Iterator[None]:
    """product_api stops answering (SIGSTOP): its socket still accepts, nothing replies."""
    child = system.children[services.PRODUCT.name]
    child.signal_group(signal.SIGSTOP)
    try:
        yield
    finally:
        child.signal_group(signal.SIGCONT)
        wait_until(lambda: get(gateway, "/get_products").status == 200, timeout=10)


@pytest.mark.usefixtures("product_api_killed")
def test_product_api_down_gives_fast_503_and_user_routes_keep_working(
    gateway: str, member_token: str, unique: Callable[[str], str]
) -> None:
    listed = get(gateway, "/get_products")
    _assert_unavailable(listed)
    assert listed.json()["Code"] == "ServiceUnavailableError"
    assert listed.seconds < FAST_SECONDS

    added = post(
        gateway,
        "/add_product",
        {"product_id": unique("down"), "product_name": "Lamp"},
        headers=bearer(member_token),
    )
    _assert_unavailable(added)
    assert added.json()["Code"] == "ServiceUnavailableError"
    assert added.seconds < FAST_SECONDS

    _user_routes_work(gateway, unique)

    health = get(gateway, "/health")
    assert health.status == 503, health
    assert "product_api" in health.body.decode()
    assert health.seconds < FAST_SECONDS


@pytest.mark.usefixtures("product_api_hung")
def test_product_api_hung_gives_504_within_the_read_timeout(
    gateway: str, member_token: str, unique: Callable[[str], str]
) -> None:
    # Both wait out the gateway's read timeout, so they run side by side; the client waits
    # longer than the gateway does.
    read_timeout = aws.budget("local").upstream_deadline
    patience = read_timeout + 2 * FAST_SECONDS
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        listing = pool.submit(call, gateway, "GET", "/get_products", timeout=patience)
        adding = pool.submit(
            call, gateway, "POST", "/add_product",
            {"product_id": unique("hung"), "product_name": "Clock"},
            bearer(member_token), patience,
        )  # fmt: skip
        listed, added = listing.result(timeout=60), adding.result(timeout=60)
    for reply in (listed, added):
        _assert_unavailable(reply, 504)
        assert reply.seconds < read_timeout + FAST_SECONDS, reply.seconds

    _user_routes_work(gateway, unique)
