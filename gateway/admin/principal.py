"""Who an admin token speaks for: `Principal` (its subject and scopes) and the claim rules
that need no signature check.

Owns the scope rule (killgate:admin implies every scope but killgate:breakglass), reading a
token's scopes from `scope`/`scp`, which subjects are printable, and the checks of a
verified token's claims (`principal_of`: times, subject, a scoped key's binding). Pure: no pyjwt (that
stays in admin/auth.py), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.admin.scopedkeys import ScopedKey
from gateway.config import AuthConfig
from gateway.domain.audit import clean_text
from gateway.errors import Forbidden, Unauthenticated

__all__ = ["Principal", "principal_of", "printable_subject", "scopes_of", "still_in_age"]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """killgate:admin implies every scope but killgate:breakglass, which skips the
        two-person rule and so must be granted by name."""
        if scope in self.scopes:
            return
        if "killgate:admin" not in self.scopes or scope == "killgate:breakglass":
            raise Forbidden(scope)

    def may(self, scope: str) -> bool:
        return scope in self.scopes or ("killgate:admin" in self.scopes
                                        and scope != "killgate:breakglass")


def printable_subject(sub: str) -> bool:
    """Whether a subject is text every log, audit event, table and terminal shows as it
    is: valid Unicode (no lone surrogate, which cannot be stored as UTF-8) without
    control or bidirectional characters (which would move a terminal's cursor or turn a
    row around where an approver reads who asked). It names the actor of kills and
    approvals, so it is refused rather than altered."""
    try:
        sub.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return clean_text(sub, len(sub)) == sub


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """A token's scopes: its `scope` claim (space-delimited) and its `scp` claim (a list)."""
    scopes: set[str] = set()
    raw_scope = claims.get("scope")
    if isinstance(raw_scope, str):
        scopes.update(raw_scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        scopes.update(x for x in scp if isinstance(x, str))
    return frozenset(scopes)


def principal_of(claims: dict[str, Any], scoped: ScopedKey | None, cfg: AuthConfig,
                 now: float) -> Principal:
    """Who a token whose signature was checked speaks for, once its claims pass: times that
    are finite numbers (`iat` not ahead of `now`, not older than `max_token_age`: 401
    expired; a lifetime within `max_token_lifetime`), a printable subject; through a scoped
    key, its actor, with scopes the key grants (refused whole, never narrowed)."""
    for name in ("exp", "iat", "nbf"):
        v = claims.get(name)
        if name in claims and (isinstance(v, bool) or not isinstance(v, int | float)
                               or not _finite(v)):
            # pyjwt accepts numeric strings (and NaN, which compares false with
            # everything: a token that never expires); we do not
            raise Unauthenticated()
    still_in_age(claims, cfg, now)
    if claims["exp"] - claims["iat"] > cfg.max_token_lifetime + cfg.leeway:
        raise Unauthenticated()  # an absurd lifetime: refused whatever its signature
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or not printable_subject(sub):
        raise Unauthenticated()
    if scoped is None:
        return Principal(sub, scopes_of(claims))
    actor = scoped.actor(sub)
    scopes = scopes_of(claims)
    scoped.check(actor, scopes)  # (refused whole, never narrowed)
    return Principal(actor, scopes)


def still_in_age(claims: Mapping[str, Any], cfg: AuthConfig, now: float) -> None:
    """The part of `principal_of`'s judgement that moves with the clock (its `iat`: not
    ahead of `now`, not older than `max_token_age`); the rest is the claims' alone, so a
    token verified before asks only this again (auth.py's cache: a kill's token)."""
    if claims["iat"] > now + cfg.leeway:
        raise Unauthenticated()
    if now - claims["iat"] > cfg.max_token_age:
        raise Unauthenticated("expired")


def _finite(v: float) -> bool:
    """A finite number a float holds (an integer beyond that range: not a time)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False
