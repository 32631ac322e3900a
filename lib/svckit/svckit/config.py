"""Environment access for settings that Chalice's stage configuration provides.

Reads happen when a value is needed, not at import: ``chalice.test.Client`` applies the stage's
environment only for the duration of a request, and Lambda's environment is fixed anyway, so a
read per use is both correct in tests and free in production. A missing variable names itself.
"""

from __future__ import annotations

import os

# The project's name: the prefix of every event source (``svckit.events``) and the CloudWatch
# namespace of every metric (``svckit.metrics``). Kept here, the lightest module, so that the
# metrics of a service that never touches events (gateway_api) import no AWS SDK for it.
PROJECT = "shop"
# The stage this code runs in: infra/service.py gives every deployed function its stage; unset,
# as in the local run and the tests, it is the local stage. Tokens name it (svckit.tokens), the
# AWS budget depends on it (svckit.aws).
STAGE_SETTING = "STAGE"
DEFAULT_STAGE = "local"


class ConfigError(RuntimeError):
    """A required setting is absent or malformed: a deployment mistake, never a client's."""


def current_stage() -> str:
    """Read per use, like every setting."""
    return optional(STAGE_SETTING, DEFAULT_STAGE)


def require(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is not set (see .chalice/config.json)")
    return value


def optional(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def integer(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from exc
