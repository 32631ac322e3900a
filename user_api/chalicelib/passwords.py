"""Argon2id password hashing at OWASP's parameters, with rehash-on-login.

The parameters come from the stage (``ARGON2_TIME_COST``, ``ARGON2_MEMORY_KIB``,
``ARGON2_PARALLELISM``) with OWASP's minimum (t=2, m=19 MiB, p=1) as the default and the floor: a
stage may make hashing stronger, never weaker. Raising them takes effect for each user at their next
login, when :func:`needs_rehash` says the stored hash is behind.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from svckit import config

OWASP_TIME_COST = 2
OWASP_MEMORY_KIB = 19 * 1024
OWASP_PARALLELISM = 1


@functools.lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
    )


def hasher() -> PasswordHasher:
    time_cost = config.integer("ARGON2_TIME_COST", OWASP_TIME_COST)
    memory_kib = config.integer("ARGON2_MEMORY_KIB", OWASP_MEMORY_KIB)
    parallelism = config.integer("ARGON2_PARALLELISM", OWASP_PARALLELISM)
    if time_cost < OWASP_TIME_COST or memory_kib < OWASP_MEMORY_KIB or parallelism < 1:
        raise config.ConfigError("Argon2 parameters must be at least OWASP's t=2, m=19456 KiB, p=1")
    return _hasher(time_cost, memory_kib, parallelism)


@functools.lru_cache(maxsize=4)
def _decoy(h: PasswordHasher) -> str:
    return h.hash("decoy password, never matched")


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    """Check ``password``; with no stored hash, spend the same work on a decoy and fail.

    Running Argon2 for unknown usernames too keeps the 401's timing from telling an attacker
    which names exist.
    """
    h = hasher()
    try:
        return h.verify(stored_hash or _decoy(h), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return hasher().check_needs_rehash(stored_hash)
