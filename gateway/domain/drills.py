"""Recovery drills in the replicated state: open, inject, restore, end (CONTRACT §5.4).

Pure state transitions over `StateDoc` (no I/O, time passed in), used by the admin API.
A drill's record lists every change it made, written in the same state change as the
change itself, so a restore — by the drill, or later by `killgate drill restore ID`
after the drill process died — undoes exactly those and nothing an operator did
meanwhile. Raises ApiError (404 unknown drill, 409 conflicting state).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.config import RouteConfig
from gateway.domain import overrides
from gateway.domain.overrides import MAX_HISTORY, effective_stable
from gateway.domain.statedoc import (
    DrillRecord,
    HistoryEntry,
    KillFlag,
    RouteOverride,
    StateDoc,
    kill_key,
    plain,
)
from gateway.errors import ApiError

__all__ = [
    "KINDS",
    "MAX_RESULTS",
    "clear_fault",
    "end",
    "inject_kill",
    "inject_rollback",
    "open_drill",
    "record_from_audit",
    "restore",
    "route_state",
    "set_fault",
    "tag",
]

KINDS = ("kill", "rollback", "failover", "store_loss")
MAX_RESULTS = 50


def tag(drill: str) -> str:
    """The prefix of the reason of every change a drill makes."""
    return f"drill {drill}: "


def route_state(doc: StateDoc, rc: RouteConfig) -> dict[str, Any]:
    """What a drill must leave as it found it: every kill in force, the route's latch
    (runtime override) and weights, its progressive rollout, and drill faults on it."""
    ov = doc.overrides.get(rc.name)
    weights = ov.weights if ov is not None else {v.name: v.weight for v in rc.versions}
    return {
        "kills": sorted(doc.kills),
        "latched": ov is not None,
        "override": None if ov is None else {"kind": ov.kind, "stable": ov.stable,
                                             "weights": dict(ov.weights)},
        "stable": effective_stable(doc, rc),
        "weights": {k: float(v) for k, v in weights.items()},
        "progress": dict(doc.progress[rc.name]) if rc.name in doc.progress else None,
        "faults": sorted(d.id for d in doc.drills.values()
                         if d.route == rc.name and d.fault is not None),
    }


def _record(doc: StateDoc, drill: str) -> DrillRecord:
    rec = doc.drills.get(drill)
    if rec is None:
        raise ApiError(404, "unknown_drill", f"no open drill {drill!r}")
    return rec


def _put(doc: StateDoc, rec: DrillRecord, **kw: Any) -> StateDoc:
    return doc.with_changes(drills={**doc.drills, rec.id: replace(rec, **kw)})


def open_drill(doc: StateDoc, rc: RouteConfig, drill: str, kind: str, version: str | None,
               actor: str, now: str, deadline: float, nonce: str = "") -> StateDoc:
    if kind not in KINDS:
        raise ApiError(400, "bad_request", f"'kind' must be one of {', '.join(KINDS)}")
    if drill in doc.drills:
        raise ApiError(409, "drill_exists", f"drill {drill!r} is already open")
    for other in doc.drills.values():
        if other.route == rc.name:
            raise ApiError(409, "drill_in_progress",
                           f"drill {other.id} ({other.kind}, by {other.actor}) is still open on "
                           f"route {rc.name!r}: end it, or `killgate drill restore {other.id}`")
    if version is not None and rc.version(version) is None:
        raise ApiError(404, "unknown_version", f"route {rc.name!r} has no version {version!r}")
    rec = DrillRecord(drill, kind, rc.name, version, actor, now, deadline, route_state(doc, rc),
                      nonce=nonce)
    return doc.with_changes(drills={**doc.drills, drill: rec})


def _open(doc: StateDoc, drill: str) -> DrillRecord:
    rec = _record(doc, drill)
    if rec.restored:
        raise ApiError(409, "drill_restored", f"drill {drill} was restored; it injects nothing more")
    return rec


def inject_kill(doc: StateDoc, drill: str, scope: str, actor: str, reason: str,
                now: str) -> StateDoc:
    """Kill the drill's version (scope version), its route, or everything (global)."""
    rec = _open(doc, drill)
    if scope == "version" and rec.version is None:
        raise ApiError(400, "bad_request", "a version kill drill needs the drill's version")
    route = None if scope == "global" else rec.route
    version = rec.version if scope == "version" else None
    key = kill_key(scope, route, version)
    if key in doc.kills:
        raise ApiError(409, "already_killed", f"{key} is already killed: a drill would "
                                              "measure nothing and could lift a real kill")
    flag = KillFlag(scope, route, version, actor, tag(drill) + reason,  # type: ignore[arg-type]
                    now, doc.generation + 1, True)
    doc = doc.with_changes(kills={**doc.kills, key: flag})
    return _put(doc, rec, injected=(*rec.injected, {"kill": key, "flag": flag.public()}))


def inject_rollback(doc: StateDoc, drill: str, rc: RouteConfig, to: str | None, actor: str,
                    reason: str, now: str) -> StateDoc:
    rec = _open(doc, drill)
    before = doc.overrides.get(rc.name)
    new = overrides.rollback(doc, rc, to, actor, tag(drill) + reason, now)
    made = new.overrides[rc.name]
    change = {"override": {"route": rc.name, "before": plain(before) if before else None,
                           "progress": dict(doc.progress[rc.name])
                           if rc.name in doc.progress else None,
                           "after": plain(made)}}
    return _put(new, rec, injected=(*rec.injected, change))


def set_fault(doc: StateDoc, drill: str, expires: float) -> StateDoc:
    """Make the drill's version fail, until `expires` (unix s), for requests carrying the
    drill's token (minted when the drill opened, with its nonce)."""
    rec = _open(doc, drill)
    if rec.kind != "failover" or rec.version is None or not rec.nonce:
        raise ApiError(409, "no_fault", f"drill {drill} is not a failover drill of a version")
    return _put(doc, rec, fault={"version": rec.version, "expires": expires})


def clear_fault(doc: StateDoc, drill: str) -> StateDoc:
    rec = _record(doc, drill)
    return doc if rec.fault is None else _put(doc, rec, fault=None)


def _reinstate(doc: StateDoc, rc: RouteConfig, before: dict[str, Any] | None, actor: str,
               reason: str, now: str) -> StateDoc:
    """Put back the override the route had before the drill (none: the file governs)."""
    was = effective_stable(doc, rc)
    ovs = {k: v for k, v in doc.overrides.items() if k != rc.name}
    if before is not None:
        ovs[rc.name] = RouteOverride(**before)
    doc = doc.with_changes(overrides=ovs)
    stable = effective_stable(doc, rc)
    if stable == was:
        return doc
    v = rc.version(stable)
    assert v is not None
    entry = HistoryEntry(stable, now, actor, reason, v.url, v.artifact, doc.generation + 1)
    history = (*doc.history.get(rc.name, ()), entry)[-MAX_HISTORY:]
    return doc.with_changes(history={**doc.history, rc.name: history})


def restore(doc: StateDoc, drill: str, routes: dict[str, RouteConfig], actor: str,
            now: str) -> tuple[StateDoc, list[dict[str, Any]]]:
    """Undo every change the drill made that is still as the drill left it; a change
    someone made since (an operator's own kill or rollback) is kept and reported."""
    rec = _record(doc, drill)
    notes: list[dict[str, Any]] = []
    reason = tag(drill) + "restore"
    for change in reversed(rec.injected):
        if "kill" in change:
            key = change["kill"]
            flag = doc.kills.get(key)
            if flag is not None and flag.public() == change["flag"]:
                doc = doc.with_changes(kills={k: f for k, f in doc.kills.items() if k != key})
                notes.append({"unkill": key})
            else:
                notes.append({"kept": key, "why": "lifted or replaced since the drill made it"})
        elif "override" in change:
            ch = change["override"]
            rc = routes.get(ch["route"])
            cur = doc.overrides.get(ch["route"])
            if rc is None or cur is None or plain(cur) != ch["after"]:
                notes.append({"kept": f"override:{ch['route']}",
                              "why": "changed since the drill made it"})
                continue
            doc = _reinstate(doc, rc, ch["before"], actor, reason, now)
            if ch["progress"] is not None and ch["route"] not in doc.progress:
                doc = doc.with_changes(progress={**doc.progress, ch["route"]: ch["progress"]})
            notes.append({"override": ch["route"], "to": ch["before"]})
    if rec.fault is not None:
        notes.append({"fault_cleared": rec.fault["version"]})
    return _put(doc, rec, injected=(), fault=None, restored=True), notes


def end(doc: StateDoc, drill: str, result: dict[str, Any]) -> StateDoc:
    """Close a restored drill; keep its summary as the last result of its kind and route."""
    rec = _record(doc, drill)
    if not rec.restored:
        raise ApiError(409, "not_restored", f"drill {drill} has not been restored yet")
    drills = {k: v for k, v in doc.drills.items() if k != drill}
    key = f"{rec.kind}:{rec.route}"
    results = {k: v for k, v in doc.drill_results.items() if k != key}
    results[key] = result
    if len(results) > MAX_RESULTS:
        results = dict(list(results.items())[-MAX_RESULTS:])
    return doc.with_changes(drills=drills, drill_results=results)


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
            injected.append({"kill": key, "flag": after})
        elif e.get("action") == "rollback" and isinstance(after, dict):
            injected.append({"override": {"route": target.get("route"),
                                          "before": e.get("before"), "progress": None,
                                          "after": after}})
    before = start.get("before") if isinstance(start.get("before"), dict) else {}
    return DrillRecord(drill, str(t.get("kind")), str(t.get("route")), t.get("version"),
                       str(start.get("actor")), str(start.get("time")), 0.0, before,
                       tuple(injected))
