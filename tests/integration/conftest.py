"""One real system per test session: moto's server, the tables and the three devservers, started
on free ports by ``tools.localrun.LocalSystem``, the same code ``make run`` runs.

Session scope because starting four Python processes is most of this layer's time; the tests
share the tables, so each one names what it creates uniquely (``unique``) and asserts on its own
records, never on a table's total.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.system import post
from tools import services
from tools.localrun import LocalSystem, Ports

PASSWORD = "correct-horse-1234"


@pytest.fixture(scope="session")
def system() -> Iterator[LocalSystem]:
    local = LocalSystem(Ports.free())
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def gateway(system: LocalSystem) -> str:
    return system.url(services.GATEWAY)


@pytest.fixture(scope="session")
def user_api(system: LocalSystem) -> str:
    return system.url(services.USER)


@pytest.fixture(scope="session")
def product_api(system: LocalSystem) -> str:
    return system.url(services.PRODUCT)


@pytest.fixture(scope="session")
def unique() -> Callable[[str], str]:
    """``unique("u")`` -> ``"u_3f9a1c_1"``: valid as a username and a product id, never repeated."""
    run = uuid.uuid4().hex[:6]
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{run}_{next(counter)}"


@pytest.fixture(scope="session")
def member_token(gateway: str, unique: Callable[[str], str]) -> str:
    """A token for a freshly registered user, obtained through the gateway."""
    name = unique("member")
    registered = post(gateway, "/register_user", {"username": name, "password": PASSWORD})
    assert registered.status == 201, registered
    login = post(gateway, "/login_user", {"username": name, "password": PASSWORD})
    assert login.status == 200, login
    return str(login.json()["access_token"])
