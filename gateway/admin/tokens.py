"""Admin tokens outside a check: minting an HS256 one (development, tests, `killgate
token`, the demo) and reading the scopes a token claims without verifying it (the CLI's
guess at what the API will allow; the API verifies, admin/auth.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from gateway.admin.principal import scopes_of

__all__ = ["MIN_SECRET", "mint", "unverified_scopes"]

MIN_SECRET = 32  # bytes of an HMAC secret, at least


def mint(secret: str, subject: str, scope: str, ttl: float, issuer: str | None,
         audience: str | None, kid: str | None = None) -> str:
    """An HS256 admin token (for development, tests and `killgate token`); `kid`: the
    name of the scoped key whose secret this is."""
    if len(secret.encode()) < MIN_SECRET:
        raise ValueError(f"the HMAC secret must be at least {MIN_SECRET} bytes")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "scope": scope, "iat": now, "exp": now + int(ttl),
                              "jti": uuid.uuid4().hex}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256",
                      headers={"kid": kid} if kid is not None else None)


def unverified_scopes(token: str) -> frozenset[str] | None:
    """The scopes a token claims, read without verifying it (the CLI's guess at what the
    API will allow; the API verifies); None when it is not a JWT."""
    try:
        return scopes_of(jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError:
        return None
