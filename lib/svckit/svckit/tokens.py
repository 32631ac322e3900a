"""Issuing and verifying the access tokens.

Only user_api holds the private key and issues tokens; every other service verifies with the
public JWKS, locally, without a call per request. The accepted algorithm is pinned to EdDSA and
never read from the token, so ``alg: none`` and HS256-with-the-public-key confusion fail before
any key is used; the key is chosen by ``kid`` from the JWKS, which is what makes rotation work.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from chalice import UnauthorizedError

from svckit import config
from svckit.keys import key_id, load_private_key

ALGORITHM = "EdDSA"
CLOCK_SKEW_SECONDS = 30
# Who issues and who accepts names the stage, so a token from one stage never verifies in
# another even if both hold the same key (as a stage copied from dev once did).
STAGE_SETTING = config.STAGE_SETTING
DEFAULT_STAGE = config.DEFAULT_STAGE
current_stage = config.current_stage


def issuer_for(stage: str) -> str:
    return f"shop/{stage}/user_api"


def audience_for(stage: str) -> str:
    return f"shop/{stage}"


# The local stage's values, for tests and tools that build tokens by hand.
ISSUER = issuer_for(DEFAULT_STAGE)
AUDIENCE = audience_for(DEFAULT_STAGE)
# The optional claim naming the registration a token was issued to (see ``Principal.account``).
ACCOUNT_CLAIM = "acct"


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    username: str
    roles: frozenset[str]
    # Which registration of ``username`` the token was issued to (the ``acct`` claim), so that a
    # name deleted and registered again is a new account to the service that owns the users;
    # None for tokens without the claim. Other services ignore it.
    account: str | None = None

    def is_user(self, username: str) -> bool:
        # Usernames are unique without regard to case, so identity is compared the same way.
        return self.username.lower() == username.lower()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class TokenIssuer:
    """Signs tokens for ``stage``, or for the current stage (read at each issue) when None."""

    def __init__(self, private_key_pem: str, ttl_seconds: int, stage: str | None = None) -> None:
        self._key = load_private_key(private_key_pem)
        self._kid = key_id(self._key.public_key())
        self.ttl_seconds = ttl_seconds
        self._stage = stage

    def issue(self, username: str, roles: Iterable[str] = (), account: str | None = None) -> str:
        now = int(time.time())
        stage = self._stage or current_stage()
        claims = {
            "sub": username,
            "iss": issuer_for(stage),
            "aud": audience_for(stage),
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "roles": sorted(roles),
        }
        if account is not None:
            claims[ACCOUNT_CLAIM] = account
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})


class TokenVerifier:
    """Verifies against a JWKS; issuer and audience are the given ones, or the current stage's
    (read at each verify, so a verifier cached across stage settings still checks the right one).
    """

    def __init__(
        self, jwks_json: str, issuer: str | None = None, audience: str | None = None
    ) -> None:
        keys = jwt.PyJWKSet.from_json(jwks_json)
        # Only Ed25519 keys bound to EdDSA are trusted, whatever else the set might list.
        self._keys = {k.key_id: k for k in keys.keys if k.key_id and k.algorithm_name == ALGORITHM}
        if not self._keys:
            raise ValueError("the JWKS holds no EdDSA key with a kid")
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise UnauthorizedError("token is malformed") from exc
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise UnauthorizedError("token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                issuer=self._issuer or issuer_for(current_stage()),
                audience=self._audience or audience_for(current_stage()),
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthorizedError("token has expired") from exc
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"token is invalid: {exc}") from exc
        subject = claims["sub"]
        roles = claims.get("roles", [])
        account = claims.get(ACCOUNT_CLAIM)
        if (
            not isinstance(subject, str)
            or not isinstance(roles, list)
            or not isinstance(account, str | None)
        ):
            raise UnauthorizedError("token is invalid: malformed claims")
        return Principal(username=subject, roles=frozenset(str(r) for r in roles), account=account)
