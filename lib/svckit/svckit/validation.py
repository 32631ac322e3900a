"""The field rules of the HTTP contract, declared once and checked the same way everywhere.

Each rule is data (:class:`Text`, :class:`Money`, :class:`Email`) and every route declares its body
as a :class:`Schema` of them, so a route's validation lives in one place and its error messages
follow one grammar: the field's name, then the rule it broke. The checks are small enough that a
schema library would add cold-start time and rewritten messages without removing any logic;
money is parsed as ``Decimal`` (never float) because DynamoDB stores exact numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from chalice import BadRequestError

from svckit.errors import not_found


def _check_unicode(name: str, value: str) -> None:
    """Lone surrogates are valid JSON escapes but not storable text (boto3 cannot encode them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(f"{name} must be valid Unicode text") from exc


@dataclass(frozen=True)
class Text:
    """A string rule: length bounds, an optional character set, and whether blank is allowed."""

    min_length: int
    max_length: int
    pattern: re.Pattern[str] | None = None
    charset: str = ""
    allow_blank: bool = True

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise BadRequestError(f"{name} must be a string")
        _check_unicode(name, value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise BadRequestError(
                f"{name} must be {self.min_length}-{self.max_length} characters of {self.charset}"
            )
        if not self.allow_blank and not value.strip():
            raise BadRequestError(f"{name} must not be blank")
        if len(value) < self.min_length:
            unit = "character" if self.min_length == 1 else "characters"
            raise BadRequestError(f"{name} must be at least {self.min_length} {unit}")
        if len(value) > self.max_length:
            raise BadRequestError(f"{name} must be at most {self.max_length} characters")
        return value


@dataclass(frozen=True)
class Email:
    """Plausible, not proven: one ``@``, a dotted domain, no spaces, at most 254 characters."""

    _shape: re.Pattern[str] = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise BadRequestError(f"{name} must be a string")
        _check_unicode(name, value)
        if len(value) > 254 or not self._shape.fullmatch(value):
            raise BadRequestError(f"{name} must be a valid email address")
        return value


@dataclass(frozen=True)
class Money:
    """A number >= 0 with at most two decimals, kept exact as ``Decimal``."""

    maximum: Decimal = Decimal("1000000000")

    def check(self, name: str, value: Any) -> Decimal:
        rule = f"{name} must be a number >= 0 with at most 2 decimals"
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise BadRequestError(rule)
        try:
            amount = Decimal(value)
            exact = amount == amount.quantize(Decimal("0.01"))
        except InvalidOperation as exc:
            raise BadRequestError(rule) from exc
        if not amount.is_finite() or amount < 0 or not exact:
            raise BadRequestError(rule)
        if amount > self.maximum:
            raise BadRequestError(f"{name} must be at most {self.maximum}")
        return amount.quantize(Decimal("0.01")) if amount != amount.to_integral() else amount


Rule = Text | Email | Money

USERNAME = Text(3, 32, re.compile(r"[A-Za-z0-9_.\-]{3,32}"), "A-Z a-z 0-9 _ . -")
PASSWORD = Text(8, 128)
EMAIL = Email()
PRODUCT_ID = Text(1, 64, re.compile(r"[A-Za-z0-9_\-]{1,64}"), "A-Z a-z 0-9 _ -")
PRODUCT_NAME = Text(1, 200, allow_blank=False)
PRICE = Money()
DESCRIPTION = Text(0, 2000)


@dataclass(frozen=True)
class IntRange:
    minimum: int
    maximum: int

    def check(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequestError(f"{name} must be an integer")
        if not self.minimum <= value <= self.maximum:
            raise BadRequestError(f"{name} must be between {self.minimum} and {self.maximum}")
        return value


def path_value(rule: Text, value: str, what: str) -> str:
    """A path parameter gets the same rule as the body field it names; a value that breaks it
    names nothing that can exist, so it is a 404, and the table is never asked."""
    try:
        return rule.check(what, value)
    except BadRequestError as exc:
        raise not_found(what, value) from exc


@dataclass(frozen=True)
class Schema:
    """A JSON object body: which fields are required, which optional, and each one's rule."""

    required: Mapping[str, Rule | IntRange] = field(default_factory=dict)
    optional: Mapping[str, Rule | IntRange] = field(default_factory=dict)

    def check(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the validated fields; reject unknown ones so a typo never passes silently."""
        unknown = sorted(set(body) - set(self.required) - set(self.optional))
        if unknown:
            raise BadRequestError(f"{unknown[0]} is not a known field")
        clean: dict[str, Any] = {}
        for name, rule in self.required.items():
            if body.get(name) is None:
                raise BadRequestError(f"{name} is required")
            clean[name] = rule.check(name, body[name])
        for name, rule in self.optional.items():
            if body.get(name) is not None:
                clean[name] = rule.check(name, body[name])
        return clean
