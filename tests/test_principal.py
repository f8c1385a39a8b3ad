"""admin/principal.py: the scope rule and the claim rules that need no signature (pure: no
loop, no token; the API's use of them: test_admin_auth.py, test_admin_approvals.py)."""

from __future__ import annotations

import pytest

from gateway.admin.principal import Principal, printable_subject, scopes_of
from gateway.errors import Forbidden


def test_admin_implies_every_scope_but_breakglass() -> None:
    admin = Principal("ops", frozenset({"killgate:admin"}))
    for scope in ("killgate:kill", "killgate:rollback", "killgate:drill", "killgate:read"):
        admin.require(scope)
        assert admin.may(scope)
    with pytest.raises(Forbidden):
        admin.require("killgate:breakglass")
    assert not admin.may("killgate:breakglass")
    glass = Principal("ops", frozenset({"killgate:breakglass"}))
    glass.require("killgate:breakglass")
    assert not glass.may("killgate:kill")  # (named alone, it grants nothing else)


def test_scopes_come_from_scope_and_scp_and_nothing_else_counts() -> None:
    assert scopes_of({"scope": "killgate:kill  killgate:read", "scp": ["killgate:drill", 7]}) \
        == {"killgate:kill", "killgate:read", "killgate:drill"}
    assert scopes_of({"scope": ["killgate:admin"], "scp": "killgate:admin"}) == frozenset()


@pytest.mark.parametrize(("sub", "ok"), [
    ("alice@example.com", True), ("Zoë Ünal", True), ("ops\nbob", False),
    ("eve\u202emoc.", False), ("\udc80", False), ("tab\there", False)])
def test_a_subject_is_printable_or_refused_whole(sub: str, ok: bool) -> None:
    assert printable_subject(sub) is ok
