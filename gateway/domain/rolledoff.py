"""The versions a rollback took off a route, and the previous stable that skips them.

A rollback (an operator's, an alert's, or canary analysis's automatic one) records every
version it takes off the route, with the url and artifact the config gave it then. The
record is part of the state document (persisted and replicated like the overrides), so it
outlives the rollback's latch: once the rollback is released or replaced, the version
rolled off is never again the "previous stable" a rollback without `to` (or an automatic
one) goes to, nor the route's previous known-good. It applies while the config has that
version as recorded: a new url or artifact is another deployment. An operator naming the
version (promote, weights giving it traffic, rollback --to it) clears it, as does a
progressive rollout promoting it. The newest MAX_ROLLED_OFF per route are kept. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway import redact
from gateway.config import RouteConfig
from gateway.domain.statedoc import HistoryEntry, RolledOff, StateDoc, kill_key, plain

__all__ = ["MAX_ROLLED_OFF", "cleared", "drill_made", "held_moved", "held_off", "killed_by",
           "previous_stable", "recorded"]

MAX_ROLLED_OFF = 8  # records kept per route (the oldest are dropped)


def _applies(rec: RolledOff, rc: RouteConfig) -> bool:
    v = rc.version(rec.version)
    return v is not None and v.url == rec.url and v.artifact == rec.artifact


def held_off(doc: StateDoc, rc: RouteConfig) -> dict[str, RolledOff]:
    """Version -> its newest record, for the versions rolled off that the config still
    has as they were rolled off."""
    return {r.version: r for r in doc.rolled_off.get(rc.name, ()) if _applies(r, rc)}


def previous_stable(doc: StateDoc, rc: RouteConfig, current: str) -> HistoryEntry | None:
    """The most recent stable in the route's history other than `current`, skipping the
    versions rolled off (`held_off`)."""
    return doc.previous_stable(rc.name, current, held_off(doc, rc))


def recorded(doc: StateDoc, rc: RouteConfig, off: Iterable[str], kind: str, actor: str,
             now: str, named: Iterable[str] = ()) -> Mapping[str, tuple[RolledOff, ...] | None]:
    """`Change.rolled_off` for a rollback taking `off` off the route (`named`: the version
    an operator named as its target, cleared)."""
    new = []
    for name in sorted(set(off)):
        v = rc.version(name)
        if v is not None:
            new.append(RolledOff(name, v.url, v.artifact, now, actor, kind))
    drop = {r.version for r in new} | set(named)
    kept = tuple(r for r in doc.rolled_off.get(rc.name, ()) if r.version not in drop)
    out = (*kept, *new)[-MAX_ROLLED_OFF:]
    if out == doc.rolled_off.get(rc.name, ()):
        return {}
    return {rc.name: out or None}


def cleared(doc: StateDoc, rc: RouteConfig,
            names: Iterable[str]) -> Mapping[str, tuple[RolledOff, ...] | None]:
    """`Change.rolled_off` for an operator bringing `names` back (empty: nothing to clear)."""
    gone = set(names)
    have = doc.rolled_off.get(rc.name, ())
    kept = tuple(r for r in have if r.version not in gone)
    return {} if len(kept) == len(have) else {rc.name: kept or None}


def drill_made(doc: StateDoc, route: str) -> Mapping[str, Any] | None:
    """What an open drill kept of the route's override in force when that drill made it
    ({"route", "before", "progress", "after"}), else None. A drill's rollback records
    nothing (a rehearsal): a rollback taking it over records what it took off."""
    ov = doc.overrides.get(route)
    if ov is None or not doc.drills:
        return None
    now = plain(ov)
    for rec in doc.drills.values():
        for m in rec.injected:
            made = m.get("override")
            if made is not None and made.get("route") == route and made.get("after") == now:
                return made
    return None


def killed_by(doc: StateDoc, route: str, version: str) -> str | None:
    """The kill of `version` itself, in force (its key): a rollback to it would leave the
    route nothing to serve once the route's other versions are rolled off. A route's or
    the global kill is not counted: a rollback under it prepares what serves once it is
    lifted (kill the route, roll back, unkill: the runbook's order), and every version
    is equally off meanwhile."""
    key = kill_key("version", route, version)
    return key if key in doc.kills else None


def held_moved(doc: StateDoc, old: Iterable[RouteConfig],
               new: Iterable[RouteConfig]) -> list[str]:
    """What a reload from `old` to `new` moves under a latched override (a rollback, or a
    `weights` or `promote` one an operator pinned the route with): a version it serves (its
    stable, or a weight > 0) given another url with no artifact saying it is the same build.
    Its traffic goes to another deployment, unannounced (a reload never undoes a latch:
    this one is said, not refused)."""
    before = {rc.name: rc for rc in old}
    out = []
    for rc in new:
        ov, was = doc.overrides.get(rc.name), before.get(rc.name)
        if ov is None or was is None:
            continue
        held = {"weights": "weights override", "promote": "promotion"}.get(ov.kind, ov.kind)
        total = sum(ov.weights.values()) or 1.0
        for v in rc.versions:
            w, prev = ov.weights.get(v.name, 0.0), was.version(v.name)
            if (w <= 0 and v.name != ov.stable) or prev is None or prev.url == v.url \
                    or (v.artifact is not None and v.artifact == prev.artifact):
                continue
            out.append(f"route {rc.name!r}: version {v.name!r}, held by a {held} "
                       f"({ov.actor}, {ov.time}: {ov.reason!r}), moves from "
                       f"{redact.url(prev.url)} to {redact.url(v.url)} with no artifact "
                       f"naming the build: {100.0 * w / total:g} % of the route's traffic "
                       "goes to that deployment now; if it is not the build the override "
                       "was made for, put the url back or roll back to another version "
                       "(--to)")
    return out
