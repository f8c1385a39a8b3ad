"""A drill's record in the state: finding it, what it says of the changes it made.

Owns the tag on every change a drill makes, the route state a drill must leave as it
found it (`route_state`, kept in the record when it opens), how a kill flag it made is
recognised again (`flag_id`), and the record rebuilt from the audit trail when the state
holds none. Pure (no I/O, time passed in); `domain.drills` makes the changes and
re-exports the public names.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.config import RouteConfig
from gateway.domain.drillresults import is_number
from gateway.domain.overrides import effective_stable
from gateway.domain.statedoc import DrillRecord, StateDoc, kill_key
from gateway.errors import UnknownDrill

__all__ = ["drill_record", "flag_id", "flag_key", "record_from_audit", "route_state", "tag"]


def tag(drill: str) -> str:
    """The prefix of the reason of every change a drill makes."""
    return f"drill {drill}: "


def route_state(doc: StateDoc, rc: RouteConfig, drill: str | None = None) -> dict[str, Any]:
    """What a drill must leave as it found it: every kill in force (but, as `drill` sees
    it, those another open drill made: that drill restores them, and may make or lift
    them while this one is open), the route's latch (runtime override) and weights, its
    progressive rollout, and drill faults on it."""
    ov = doc.overrides.get(rc.name)
    weights = ov.weights if ov is not None else {v.name: v.weight for v in rc.versions}
    others = {(m["kill"], flag_key(m["flag"])) for rec in doc.drills.values()
              if drill is not None and rec.id != drill for m in rec.injected if "kill" in m}
    return {
        "kills": sorted(k for k, f in doc.kills.items()
                        if not others or (k, flag_key(f.public())) not in others),
        "latched": ov is not None,
        "override": None if ov is None else {"kind": ov.kind, "stable": ov.stable,
                                             "weights": dict(ov.weights)},
        "stable": effective_stable(doc, rc),
        "weights": {k: float(v) for k, v in weights.items()},
        "progress": dict(doc.progress[rc.name]) if rc.name in doc.progress else None,
        "faults": sorted(d.id for d in doc.drills.values()
                         if d.route == rc.name and d.fault is not None),
    }


def drill_record(doc: StateDoc, drill: str) -> DrillRecord:
    """The open drill's record; UnknownDrill when the state has none."""
    rec = doc.drills.get(drill)
    if rec is None:
        raise UnknownDrill(drill)
    return rec


def flag_id(flag: dict[str, Any]) -> dict[str, Any]:
    """A kill flag as the drill recorded it (its generation is stamped when committed)."""
    return {k: v for k, v in flag.items() if k not in ("generation", "write")}


def flag_key(flag: dict[str, Any]) -> str:
    """`flag_id` as a value that can be compared in a set."""
    return json.dumps(flag_id(flag), sort_keys=True, default=str)


def record_from_audit(drill: str, events: list[dict[str, Any]]) -> DrillRecord | None:
    """The record of a drill, rebuilt from its audit events (newest first, as the trail
    pages them) when the state holds none, so a restore works from the trail alone: the
    state it opened on, and each kill or rollback it made. None when the trail has no
    `drill.start` for it, or says it ended."""
    mine = [e for e in reversed(events) if e.get("drill") == drill]
    start = next((e for e in mine if e.get("action") == "drill.start"), None)
    if start is None or any(e.get("action") == "drill.end" for e in mine):
        return None
    t = start.get("target") or {}
    injected: list[dict[str, Any]] = []
    for e in mine:
        target, after = e.get("target") or {}, e.get("after")
        if e.get("action") == "kill" and isinstance(after, dict):
            key = kill_key(str(target.get("scope")), target.get("route"), target.get("version"))
            injected.append({"kill": key, "flag": flag_id(after)})
        elif e.get("action") == "rollback" and isinstance(after, dict):
            prog = e.get("progress_before")
            injected.append({"override": {"route": target.get("route"),
                                          "before": e.get("before"),
                                          "progress": prog if isinstance(prog, dict) else None,
                                          "after": after}})
    before = start.get("before") if isinstance(start.get("before"), dict) else {}
    opened = start.get("after") if isinstance(start.get("after"), dict) else {}
    deadline = opened.get("deadline", 0.0)
    return DrillRecord(drill, str(t.get("kind")), str(t.get("route")), t.get("version"),
                       str(start.get("actor")), str(start.get("time")),
                       float(deadline) if is_number(deadline) else 0.0, before,
                       tuple(injected), made=len(injected))
