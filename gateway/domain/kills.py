"""The kill switch's rule: what a kill asks of the state document, for every caller.

Pure (statedoc, drills). `kill` is the one rule by which a person (admin API), an alert or
anything else sets a kill flag. A kill already in force changes nothing and keeps who
killed, when and why, except that asking to cut in-flight answers upgrades a flag that
did not, and a flag an open drill holds, or one a re-seed carried over (it may be a kill
lifted since: `carried`), is taken over: the drill's restore then leaves it (it undoes only
what is still as the drill left it). `in_force`: that rule asked by a kill the store cannot
commit (kept locally unless it would change nothing). `newly_aborting` and `covering`: which
in-flight exchanges a new document's kills cut. `unrouted`: the kills a config no longer
routes to (a removed or renamed name: out of routing, in force again if the name returns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from gateway.config import RouteConfig
from gateway.domain import drills
from gateway.domain.statedoc import Change, KillFlag, KillScope, StateDoc, kill_key

__all__ = ["carried", "covering", "in_force", "kill", "newly_aborting", "unrouted", "unrouted_since"]


def kill(doc: StateDoc, scope: KillScope, route: str | None, version: str | None,
         actor: str, reason: str, now: str, abort_inflight: bool = True) -> Change | None:
    """The change a kill of (scope, route, version) makes; None when already in force."""
    key = kill_key(scope, route, version)
    existing = doc.kills.get(key)
    standing = _confirmable(doc, key)
    if standing is not None:
        if abort_inflight and not standing.abort_inflight:
            return Change(kills={key: replace(standing, abort_inflight=True)})
        return None
    if existing is not None and not drills.holds_kill(doc, key):
        abort_inflight = abort_inflight or existing.abort_inflight  # (as an upgrade would)
    # generation 0: statedoc.apply_change stamps the generation the kill lands in
    return Change(kills={key: KillFlag(scope, route, version, actor, reason, now, 0,
                                       abort_inflight)})


def in_force(doc: StateDoc, scope: KillScope, route: str | None, version: str | None,
             abort_inflight: bool = True) -> KillFlag | None:
    """The flag that makes a kill of (scope, route, version) change nothing (`kill` answers
    None), or None. What a kill the store cannot commit asks (`kill --local`, an alert's
    kill in an outage): with a flag, nothing is kept locally; without, the kill is taken
    locally and merged as `kill` would write it. So not a flag an open drill made (its
    restore lifts it), one a re-seed carried (`carried`: the merge of the instance that
    lifted it drops it), nor one that does not cut in-flight answers when the kill asks
    to (the store's kill upgrades it)."""
    flag = _confirmable(doc, kill_key(scope, route, version))
    if flag is None or (abort_inflight and not flag.abort_inflight):
        return None
    return flag


def _confirmable(doc: StateDoc, key: str) -> KillFlag | None:
    """The flag at `key` a kill confirms (or upgrades) rather than takes over, or None."""
    flag = doc.kills.get(key)
    if flag is None or drills.holds_kill(doc, key) or carried(doc, flag):
        return None
    return flag


def carried(doc: StateDoc, flag: KillFlag) -> bool:
    """Whether `flag` is older than `doc`'s newest re-seed (its lineage: the generations it
    descends from). A re-seed keeps every kill its side knows, also one an instance that
    had not re-seeded yet lifted meanwhile (the restrictive merge: such a kill comes back
    once); when that instance merges, it drops the flag as lifted (the write that made it
    is one it names lifted). So a kill asked for then is written anew (a flag of its own),
    never confirmed on such a flag: confirmed, the kill the operator was told is in force
    went with it, on every instance, and no unkill came after it."""
    return bool(doc.lineage) and flag.generation <= max(doc.lineage.values())


def newly_aborting(before: StateDoc, after: StateDoc) -> frozenset[str]:
    """The kill keys of `after` that ask to cut in-flight answers and did not in `before`
    (new kills, or kills newly asked to abort)."""
    old = before.kills
    return frozenset(k for k, f in after.kills.items()
                     if f.abort_inflight and (k not in old or not old[k].abort_inflight))


def covering(keys: frozenset[str], route: str, version: str | None,
             production: str | None = None) -> str | None:
    """The scope ("global", "route", "version") of the widest of `keys` that covers an
    exchange on (route, version), or None. `production`: the route a drill route
    (`drill_for`) serves the versions of, whose kills cover it too."""
    if "global" in keys:
        return "global"
    names = (route,) if production is None else (route, production)
    if any(kill_key("route", n, None) in keys for n in names):
        return "route"
    if version is not None and any(kill_key("version", n, version) in keys for n in names):
        return "version"
    return None


def unrouted(doc: StateDoc, routes: Iterable[RouteConfig]) -> frozenset[str]:
    """The keys of `doc`'s route and version kills that name a route, or a version of a
    route, `routes` do not have. Such a kill stops nothing: traffic under another name is
    served (README: a rename is a config change, reviewed as an unkill would be)."""
    versions = {rc.name: {v.name for v in rc.versions} for rc in routes}
    return frozenset(
        k for k, f in doc.kills.items()
        if (f.scope == "route" and f.route not in versions)
        or (f.scope == "version" and f.version not in versions.get(f.route or "", ())))


def unrouted_since(old: StateDoc, new: StateDoc,
                   route: Callable[[str], RouteConfig | None]) -> frozenset[str]:
    """`unrouted(new, R) - unrouted(old, R)` for the routes R (`route`: one by name), reading
    only the kills that differ: a kill whose scope, route and version are the same in both
    is unrouted in both or in neither. On every instance's swap of every kill: the two
    `unrouted` calls read every route's versions (~24k instructions for one route; a
    fleet's 500 routes, every kill, every instance)."""
    was = old.kills
    out = []
    for k, f in new.kills.items():
        w = was.get(k)
        if w is not None and w.scope == f.scope and w.route == f.route \
                and w.version == f.version:
            continue
        if _unrouted(f, route) and (w is None or not _unrouted(w, route)):
            out.append(k)
    return frozenset(out)


def _unrouted(f: KillFlag, route: Callable[[str], RouteConfig | None]) -> bool:
    """Whether the kill `f` names a route, or a version of a route, the routes lack
    (`unrouted`'s rule for one kill)."""
    if f.scope == "route":
        return route(f.route or "") is None
    if f.scope == "version":
        rc = route(f.route or "")
        return rc is None or f.version not in {v.name for v in rc.versions}
    return False
