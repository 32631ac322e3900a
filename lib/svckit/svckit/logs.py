"""Structured logs: one JSON line per event, every line of a request carrying its request id.

Powertools' Logger does the formatting. Keys are appended with its thread-safe API because the
local server answers requests on threads, where the plain ``append_keys`` would let one
request's id leak onto another's lines.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from svckit import config


def make_logger(service: str) -> Logger:
    return Logger(service=service, level=config.optional("LOG_LEVEL", "INFO"))
