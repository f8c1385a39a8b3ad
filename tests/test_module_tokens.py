"""Admin tokens minted at a test module's import outlive the suite.

A module-level `bearer(...)` or `admin_token(...)` is minted when pytest collects the
module, at the suite's start; the module's tests may run 20 minutes later on a loaded
2-core CI machine. Two modules minted theirs for 10 minutes, and in a clean-clone CI run
their gateways answered 401 `expired` (tests/test_drill_local_kill.py waited out its 20 s
for a merge it could not see). Such a token must live 3 hours (the CI's 90-minute budget,
twice); `drillrig.hdr` mints for that long.
"""

from __future__ import annotations

import ast
from pathlib import Path

MINTERS = {"bearer", "admin_token"}
LONG_ENOUGH = 3 * 3600


def _ttl(call: ast.Call) -> float | None:
    """The call's ttl as a constant (third positional or `ttl=`), None when not given."""
    node = call.args[2] if len(call.args) > 2 else next(
        (k.value for k in call.keywords if k.arg == "ttl"), None)
    if node is None:
        return None
    return float(eval(compile(ast.Expression(node), "<ttl>", "eval"), {}))


def short_lived(source: str) -> list[str]:
    """The module-level assignments of `source` minting a token for less than 3 hours."""
    found = []
    for stmt in ast.parse(source).body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
        # (anywhere in the value: `{**bearer(...), "Content-Type": ...}` minted at import
        # too, and slipped past a look at the value alone)
        for call in ast.walk(value) if value is not None else ():
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) \
                    and call.func.id in MINTERS:
                ttl = _ttl(call)
                if ttl is None or ttl < LONG_ENOUGH:
                    found.append(f"line {stmt.lineno}: {ast.unparse(stmt)[:80]}")
    return found


def test_no_module_mints_a_token_the_suite_outlives() -> None:
    bad = {str(p): found for p in sorted(Path(__file__).parent.glob("*.py"))
           if (found := short_lived(p.read_text()))}
    assert not bad, bad


def test_the_check_finds_a_short_token() -> None:
    assert short_lived('A = bearer("killgate:read", "t", 600)\n')
    assert short_lived('A = admin_token("killgate:read")\n')
    assert not short_lived('A = bearer("killgate:read", "t", 3 * 3600)\n')
    assert not short_lived('def f():\n    return bearer("killgate:read", "t", 1)\n')
    assert short_lived('A = {**bearer("killgate:admin", "t", 3600), "X": "y"}\n')
