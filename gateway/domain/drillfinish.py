"""A drill's end: restored first when it is not yet, then closed with its result, in one
change (one write, one audit event). For the admin API's `end` and for the fleet closing a
drill past its deadline (control/drillwatch.py). Pure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.config import RouteConfig
from gateway.domain import drills
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.statedoc import Change, DrillRecord, StateDoc, apply_change
from gateway.errors import ConflictingState, UnknownDrill

__all__ = ["Finished", "end_event", "finish", "iso_to_unix", "pass_refused"]


def iso_to_unix(t: str) -> float:
    try:
        return datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


@dataclass
class Finished:
    """What the last `finish` did: what its restore undid, and the drill it closed."""

    notes: list[dict[str, Any]] = field(default_factory=list)
    ended: dict[str, Any] = field(default_factory=dict)


def finish(cur: StateDoc, drill: str, routes: dict[str, RouteConfig], actor: str,
           verdict: str, summary: dict[str, Any], out: Finished,
           made_in_trail: bool = False) -> Change:
    """The change that ends `drill` with `verdict` (restoring it first if it is not yet);
    UnknownDrill when it is not open, ConflictingState `verdict_refused` when the state
    says it cannot have passed (`pass_refused`; `made_in_trail`: the audit trail has a
    change it made). `out` is filled (a write may call this again on a newer document: the
    last call's is what was written)."""
    rec = cur.drills.get(drill)
    if rec is None:
        raise UnknownDrill(drill)
    first = Change()
    out.notes = []
    if not rec.restored:
        first, out.notes = drills.restore(cur, drill, routes, actor, utc_now())
        cur = apply_change(cur, first)
    if verdict == "passed" and (why := pass_refused(cur.drills[drill], made_in_trail)):
        raise ConflictingState("verdict_refused", why)
    started = iso_to_unix(rec.started)
    out.ended = {"kind": rec.kind, "route": rec.route, "version": rec.version,
                 "started": rec.started}
    now = time.time()
    result = {"drill": drill, "kind": rec.kind, "route": rec.route, "verdict": verdict,
              "time": now, "duration_s": round(now - started, 3) if started else None,
              "summary": summary}
    return drills.merge(first, drills.end(cur, drill, result))


def pass_refused(rec: DrillRecord, made_in_trail: bool = False) -> str | None:
    """Why a restored drill cannot have passed, by what the state knows of it (None: it
    may have). The verdict is the drill runner's, from what its requests saw; these are
    the facts it cannot be true against: a drill that changed nothing (no kill, rollback or
    fault was injected: the measures a pass reports cannot exist), and one whose restore
    kept a change someone made meanwhile (the fleet is not as the drill found it)."""
    if rec.made == 0 and not made_in_trail:
        return (f"drill {rec.id} made no change (no kill, rollback or fault was injected): "
                "it cannot have passed; end it as aborted (or failed)")
    if rec.kept:
        return (f"drill {rec.id}'s restore kept {', '.join(rec.kept)} (changed by someone "
                "during the drill): the fleet is not as the drill found it, so it cannot "
                "have passed; end it as failed")
    return None


def end_event(drill: str, done: Finished, actor: str, reason: str, verdict: str,
              summary: dict[str, Any], request_id: str = "", peer: str = "",
              **after: Any) -> AuditDraft:
    """The `drill.end` audit event of what `finish` did."""
    ended = done.ended
    return AuditDraft(actor, "drill.end",
                      {"drill": drill, "kind": ended.get("kind"), "route": ended.get("route"),
                       "version": ended.get("version")},
                      reason, None, {"verdict": verdict, "summary": summary,
                                     "undone": done.notes, "started": ended.get("started"),
                                     **after},
                      request_id, peer, {"drill": drill})
