"""Who an admin token speaks for: `Principal` (its subject and scopes) and the claim rules
that need no signature check.

Owns the scope rule (killgate:admin implies every scope but killgate:breakglass), reading a
token's scopes from `scope`/`scp`, and which subjects are printable. Pure: no pyjwt (that
stays in admin/auth.py), no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.domain.audit import clean_text
from gateway.errors import Forbidden

__all__ = ["Principal", "printable_subject", "scopes_of"]


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
