"""Twenty registrations of one name, in different cases, at the same moment: one wins.

Uniqueness without regard to case rests on one conditional PutItem on the lower-cased key; a
read-then-write would let several through when the requests truly overlap, which only real
concurrent clients against the threaded local server and moto's server can show. Each
contender uses its own password, so the stored record proves that the winner's write was not
overwritten by a loser's.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import pytest

from tests.support.system import all_at_once, get, post

pytestmark = pytest.mark.integration

CONTENDERS = 20


def _casings(name: str, count: int) -> list[str]:
    """``count`` distinct spellings of ``name`` differing only in case ("Racer", "rACER", ...)."""
    letters = [i for i, ch in enumerate(name) if ch.isalpha()]
    assert 2 ** len(letters) >= count
    spellings = []
    for mask in range(count):
        chars = list(name.lower())
        for bit, index in enumerate(letters):
            if mask >> bit & 1:
                chars[index] = chars[index].upper()
        spellings.append("".join(chars))
    return spellings


def _register_together(base_url: str, bodies: list[dict[str, str]]) -> list[int]:
    """Open every connection first, then send all requests as soon as all are connected."""

    def register(conn: http.client.HTTPConnection, body: dict[str, str]) -> int:
        conn.request("POST", "/register", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status

    return all_at_once(base_url, bodies, register, timeout=30)


def test_parallel_registrations_of_one_name_give_exactly_one_201(
    user_api: str, unique: Callable[[str], str]
) -> None:
    names = _casings(unique("racer"), CONTENDERS)
    bodies = [
        {"username": name, "password": f"password-of-contender-{i}"} for i, name in enumerate(names)
    ]

    statuses = _register_together(user_api, bodies)

    assert sorted(statuses) == [201] + [409] * (CONTENDERS - 1), statuses
    winner = statuses.index(201)
    stored = get(user_api, f"/users/{names[0].lower()}")
    assert stored.status == 200, stored
    assert stored.json()["username"] == names[winner]
    # The winner's password is the one stored; any loser's is refused.
    ok = post(user_api, "/login", {"username": names[0], "password": bodies[winner]["password"]})
    assert ok.status == 200, ok
    loser = (winner + 1) % CONTENDERS
    refused = post(
        user_api, "/login", {"username": names[0], "password": bodies[loser]["password"]}
    )
    assert refused.status == 401, refused
