"""Recovery drills in the replicated state: open, inject, restore, end (CONTRACT §5.4).

Pure state transitions (no I/O, time passed in): each takes the current `StateDoc` and
returns the `Change` to commit. A drill's record lists every change it made, committed in
the same write as the change itself, so a restore — by the drill, or later by `killgate
drill restore ID` after the drill process died — undoes exactly those and nothing an
operator did meanwhile (the record itself, its lookup and its rebuild from the audit
trail: `domain.drillrecord`, re-exported here). Raises DomainError (UnknownDrill,
UnknownVersion, InvalidChange, ConflictingState).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.config import RouteConfig
from gateway.domain import overrides
from gateway.domain.drillrecord import (
    drill_record,
    flag_id,
    record_from_audit,
    route_state,
    tag,
)
from gateway.domain.drillresults import kept_results
from gateway.domain.overrides import effective_stable
from gateway.domain.statedoc import (
    Change,
    DrillRecord,
    HistoryEntry,
    KillFlag,
    RouteOverride,
    StateDoc,
    apply_change,
    kill_key,
    plain,
)
from gateway.errors import ConflictingState, InvalidChange, UnknownVersion

__all__ = [
    "KINDS",
    "drill_latch",
    "drill_only_latch",
    "end",
    "holds_kill",
    "holds_override",
    "inject_kill",
    "inject_rollback",
    "merge",
    "open_drill",
    "record_from_audit",
    "restore",
    "route_state",
    "set_fault",
    "tag",
]

KINDS = ("kill", "rollback", "failover", "store_loss")


#: changes one drill may make: its record rides in the state document every write (a kill
#: too) signs and sends whole, so injections over and over must not grow it without bound
MAX_INJECTED = 16


def _open(doc: StateDoc, drill: str) -> DrillRecord:
    rec = drill_record(doc, drill)
    if rec.restored:
        raise ConflictingState("drill_restored",
                               f"drill {drill} was restored; it injects nothing more")
    if len(rec.injected) >= MAX_INJECTED:
        raise ConflictingState("too_many_injections", f"drill {drill} made {MAX_INJECTED} "
                               "changes already; restore it, then open another")
    return rec


def open_drill(doc: StateDoc, rc: RouteConfig, drill: str, kind: str, version: str | None,
               actor: str, now: str, deadline: float, nonce: str = "") -> Change:
    if kind not in KINDS:
        raise InvalidChange(f"'kind' must be one of {', '.join(KINDS)}")
    if drill in doc.drills:
        raise ConflictingState("drill_exists", f"drill {drill!r} is already open")
    for other in doc.drills.values():
        if other.route == rc.name:
            raise ConflictingState(
                "drill_in_progress", f"drill {other.id} ({other.kind}, by {other.actor}, "
                f"since {other.started}) is still open on route {rc.name!r}: wait for it to "
                f"end; only if its process died, `killgate drill restore {other.id}`")
    if version is not None and rc.version(version) is None:
        raise UnknownVersion(rc.name, version, [v.name for v in rc.versions])
    rec = DrillRecord(drill, kind, rc.name, version, actor, now, deadline,
                      route_state(doc, rc, drill), nonce=nonce)
    return Change(drills={drill: rec})


def inject_kill(doc: StateDoc, drill: str, scope: str, actor: str, reason: str,
                now: str) -> Change:
    """Kill the drill's version (scope version), its route, or everything (global)."""
    rec = _open(doc, drill)
    if scope == "version" and rec.version is None:
        raise InvalidChange("a version kill drill needs the drill's version")
    route = None if scope == "global" else rec.route
    version = rec.version if scope == "version" else None
    key = kill_key(scope, route, version)
    if key in doc.kills:
        raise ConflictingState("already_killed", f"{key} is already killed: a drill would "
                                                 "measure nothing and could lift a real kill")
    flag = KillFlag(scope, route, version, actor, tag(drill) + reason, now, 0, True)  # type: ignore[arg-type]
    made = {"kill": key, "flag": flag_id(flag.public())}
    return Change(kills={key: flag},
                  drills={drill: replace(rec, injected=(*rec.injected, made),
                                         made=rec.made + 1)})


def inject_rollback(doc: StateDoc, drill: str, rc: RouteConfig, to: str | None, actor: str,
                    reason: str, now: str) -> Change:
    rec = _open(doc, drill)
    before = doc.overrides.get(rc.name)
    # (a rehearsal: it records no version as rolled off, and clears none)
    ch = replace(overrides.rollback(doc, rc, to, actor, tag(drill) + reason, now),
                 rolled_off={})
    made = ch.overrides[rc.name]
    assert made is not None
    record = {"override": {"route": rc.name, "before": plain(before) if before else None,
                           "progress": dict(doc.progress[rc.name])
                           if rc.name in doc.progress else None,
                           "after": plain(made)}}
    return replace(ch, drills={drill: replace(rec, injected=(*rec.injected, record),
                                              made=rec.made + 1)})


def set_fault(doc: StateDoc, drill: str, expires: float) -> Change:
    """Make the drill's version fail, until `expires` (unix s), for requests carrying the
    drill's token (minted when the drill opened, with its nonce)."""
    rec = _open(doc, drill)
    if rec.kind != "failover" or rec.version is None or not rec.nonce:
        raise ConflictingState("no_fault",
                               f"drill {drill} is not a failover drill of a version")
    return Change(drills={drill: replace(rec, fault={"version": rec.version,
                                                     "expires": expires},
                                         made=rec.made + 1)})


def _reinstate(doc: StateDoc, rc: RouteConfig, before: dict[str, Any] | None, actor: str,
               reason: str, now: str) -> Change:
    """Put back the override the route had before the drill (none: the file governs)."""
    was = effective_stable(doc, rc)
    ov = RouteOverride(**before) if before is not None else None
    stable = ov.stable if ov is not None and ov.stable and rc.version(ov.stable) else rc.stable
    history: dict[str, tuple[HistoryEntry, ...]] = {}
    if stable != was:
        v = rc.version(stable)
        assert v is not None
        history[rc.name] = (HistoryEntry(stable, now, actor, reason, v.url, v.artifact),)
    return Change(overrides={rc.name: ov}, history=history)


def holds_kill(doc: StateDoc, key: str) -> bool:
    """Whether the kill flag in force at `key` is one an open drill made (its restore would
    lift it): a person's or an alert's kill of the same key must take it over."""
    flag = doc.kills.get(key)
    if flag is None:
        return False
    mine = flag_id(flag.public())
    return any(m.get("kill") == key and flag_id(m["flag"]) == mine
               for rec in doc.drills.values() for m in rec.injected)


def drill_latch(doc: StateDoc, route: str) -> tuple[str, bool] | None:
    """The open drill whose injection the route's override is (its restore would undo it),
    and whether that injection went over a latch of the route's own (the restore puts that
    one back); None when the override is no open drill's, or there is none."""
    ov = doc.overrides.get(route)
    if ov is None:
        return None
    now = plain(ov)
    found = [(made["before"] is not None, drill) for drill, rec in sorted(doc.drills.items())
             for m in rec.injected if (made := m.get("override")) is not None
             and made["route"] == route and made["after"] == now]
    if not found:
        return None
    over, drill = min(found)  # (one over none: the restore of that one unlatches it)
    return drill, over


def holds_override(doc: StateDoc, route: str) -> bool:
    """Whether the route's override is the one an open drill made (its restore would undo
    it): an alert's rollback to the same place must take it over."""
    return drill_latch(doc, route) is not None


def drill_only_latch(doc: StateDoc, route: str) -> bool:
    """Whether the route's override is an open drill's (`holds_override`) over no latch of
    its own: the drill's restore leaves the route unlatched. (Over an operator's latch, the
    restore puts that latch back: a reload must not drop its route meanwhile.)"""
    found = drill_latch(doc, route)
    return found is not None and not found[1]


def restore(doc: StateDoc, drill: str, routes: dict[str, RouteConfig], actor: str,
            now: str) -> tuple[Change, list[dict[str, Any]]]:
    """Undo every change the drill made that is still as the drill left it; a change
    someone made since (an operator's own kill or rollback) is kept and reported."""
    rec = drill_record(doc, drill)
    notes: list[dict[str, Any]] = []
    reason = tag(drill) + "restore"
    kills: dict[str, KillFlag | None] = {}
    added: dict[str, tuple[HistoryEntry, ...]] = {}  # history entries the restore appends
    cur = doc  # the document as the changes so far leave it
    for made in reversed(rec.injected):
        if "kill" in made:
            key = made["kill"]
            flag = cur.kills.get(key)
            if flag is not None and flag_id(flag.public()) == flag_id(made["flag"]):
                kills[key] = None
                notes.append({"unkill": key})
            else:
                notes.append({"kept": key, "why": "lifted or replaced since the drill made it"})
        elif "override" in made:
            ch = made["override"]
            rc = routes.get(ch["route"])
            now_ov = cur.overrides.get(ch["route"])
            if now_ov is None or plain(now_ov) != ch["after"]:
                notes.append({"kept": f"override:{ch['route']}",
                              "why": "changed since the drill made it"})
                continue
            if rc is None:  # (a reload took the route out meanwhile: its latch is put
                # back as it was all the same, or the route would come back rolled back by
                # a drill long ended; no history entry: no version url to name)
                before = ch["before"]
                back = Change(overrides={ch["route"]: RouteOverride(**before)
                                         if before is not None else None})
            else:
                back = _reinstate(cur, rc, ch["before"], actor, reason, now)
            if ch["progress"] is not None and ch["route"] not in cur.progress:
                back = replace(back, progress={ch["route"]: ch["progress"]})
            cur = apply_change(cur, back)
            for r, entries in back.history.items():
                added[r] = (*added.get(r, ()), *entries)
            notes.append({"override": ch["route"], "to": ch["before"]})
    if rec.fault is not None:
        notes.append({"fault_cleared": rec.fault["version"]})
    done = replace(rec, injected=(), fault=None, restored=True,
                   kept=tuple(str(n["kept"]) for n in notes if "kept" in n))
    # the overrides, history and progress as `cur` has them (one write for everything)
    changed = {r for m in rec.injected if "override" in m for r in (m["override"]["route"],)}
    return Change(
        kills=kills,
        overrides={r: cur.overrides.get(r) for r in changed},
        history=added,
        progress={r: cur.progress.get(r) for r in changed},
        drills={drill: done}), notes


def end(doc: StateDoc, drill: str, result: dict[str, Any]) -> Change:
    """Close a restored drill; keep the numbers of its summary as the last result of its
    kind and route (drillresults.py)."""
    rec = drill_record(doc, drill)
    if not rec.restored:
        raise ConflictingState("not_restored", f"drill {drill} has not been restored yet")
    return Change(drills={drill: None}, drill_results=kept_results(doc, rec, result))


def merge(first: Change, then: Change) -> Change:
    """One change doing `first`, then `then` (one write, one audit event)."""
    history = dict(first.history)
    for r, entries in then.history.items():
        history[r] = (*history.get(r, ()), *entries)
    return Change(kills={**first.kills, **then.kills},
                  overrides={**first.overrides, **then.overrides}, history=history,
                  progress={**first.progress, **then.progress},
                  identities={**first.identities, **then.identities},
                  epoch=then.epoch if then.epoch is not None else first.epoch,
                  lineage=then.lineage if then.lineage is not None else first.lineage,
                  drills={**first.drills, **then.drills},
                  approvals={**first.approvals, **then.approvals},
                  drill_results={**first.drill_results, **then.drill_results},
                  rolled_off={**first.rolled_off, **then.rolled_off},
                  named=first.named | then.named, serving=first.serving | then.serving)
