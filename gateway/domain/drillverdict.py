"""A drill's verdict on what it measured (drillreport.analyse): passed, failed (every
missed target listed) or aborted; and what its restore kept because someone changed it
during the drill. Pure: no I/O; the measures, the plan's targets and the restore's answer
are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.domain.drillplan import Plan, Target

__all__ = ["kept", "verdict"]


def kept(restore: dict[str, Any]) -> list[str]:
    """What the restore left in force because someone changed it during the drill (an
    operator's kill of the same key, an unkill, a rollback), said so: without it the report
    reads as the drill's own leftover, for an on-call to lift (a real kill lifted)."""
    notes = restore.get("undone")
    return [f"kept {n['kept']}: {n.get('why', 'changed since the drill made it')}: someone "
            "changed it during the drill (an operator, an alert), and a drill's restore never "
            "undoes that; see who in killgate status and killgate audit before touching it"
            for n in notes if isinstance(n, dict) and isinstance(n.get("kept"), str)] \
        if isinstance(notes, list) else []


def _over(name: str, got: dict[str, float | None], target: Target) -> list[str]:
    out = []
    for q in ("p50", "p99", "max"):
        limit, value = getattr(target, q), got.get(q)
        if limit is not None and value is not None and value > limit:
            out.append(f"{name} {q} {value:g} ms > target {limit:g} ms")
    return out


def verdict(plan: Plan, measured: dict[str, Any], restored: bool, aborted: str | None,
            after_problems: Sequence[str]) -> tuple[str, list[str]]:
    """passed / failed / aborted, and why (a failed drill lists every missed target)."""
    if aborted:
        return "aborted", [aborted]
    why = []
    for r in measured["instances"]:
        if r[plan.measure] is None:
            why.append(f"{r['instance']}: never showed the {plan.kind} "
                       f"({plan.measure} not measured)")
        if r["time_to_restore_ms"] is None:
            why.append(f"{r['instance']}: showed no answer from before the drill after the "
                       "restore")
    t = plan.targets
    why += _over(plan.measure, measured[plan.measure], getattr(t, plan.measure))
    why += _over("time_to_restore_ms", measured["time_to_restore_ms"], t.time_to_restore_ms)
    if measured["leaks"] > t.leaks:
        why.append(f"{measured['leaks']} leak(s) > target {t.leaks}")
    if measured["errors"] > t.errors:
        why.append(f"{measured['errors']} error(s) > target {t.errors}")
    if not restored:
        why.append("the fleet is not as it was before the drill")
    why += after_problems
    return ("failed", why) if why else ("passed", [])
