"""Building the routing snapshot: config + replicated state + health -> `RouteTable`.

Owns how each route's plan is made (kills, overrides, a progressive rollout's step
weights (its rules: domain/rolloutsteps.py), killed and unhealthy versions, the previous
stable) and the partial rebuild for a new state document (only the routes it changes;
equal to a full build by construction).
Pure: no I/O; imports the config schema, the state document and the routing core
(domain/routing.py, routetable.py) only.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress
from operator import ne
from typing import Any

from gateway.config import Config, RouteConfig
from gateway.domain.rolledoff import held_off, previous_stable
from gateway.domain.rolloutsteps import progressive_weights
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import STATE_UNKNOWN, RoutePlan
from gateway.domain.statedoc import StateDoc

__all__ = ["build_table", "override_missing", "override_unservable", "rebuild_table"]


def build_table(cfg: Config, doc: StateDoc, unhealthy: frozenset[tuple[str, str]] = frozenset(),
                fail_closed: bool = False, state_unknown: bool = False,
                ejected: frozenset[tuple[str, str]] = frozenset()) -> RouteTable:
    """Combine the config, the replicated state and health into the routing snapshot.
    `state_unknown` (the kill state never loaded) closes every route, before any kill.
    `ejected`: the versions of `unhealthy` out only by passive ejection (their checks pass),
    which serve again while no other version of their route can (`_plan`)."""
    global_kill = fail_closed or "global" in doc.kills
    return RouteTable([_plan(rc, doc, unhealthy, global_kill, state_unknown,
                             prod=_prod(cfg, rc), ejected=ejected)
                       for rc in cfg.routes], doc, unhealthy)


def rebuild_table(old: RouteTable, cfg: Config, doc: StateDoc,
                  unhealthy: frozenset[tuple[str, str]] = frozenset(),
                  fail_closed: bool = False, state_unknown: bool = False,
                  ejected: frozenset[tuple[str, str]] = frozenset()) -> RouteTable:
    """`build_table` for a new state document when the config, health, fail-closed and
    state-unknown are those `old` was built from: only the plans of routes whose state
    changed are built again (a kill flips one route's plan; the others are the same
    objects), so applying a kill costs the same with 5 routes or 500. A route whose kills
    alone changed has only its kills read again (`_rekilled`: its weights, stable, pins
    and previous stable are its plan's own). Equal to a full build, by construction."""
    changes = _changes(old.doc, doc)
    if changes is None:
        return build_table(cfg, doc, unhealthy, fail_closed, state_unknown, ejected)
    by_kills, by_rest = changes
    names = by_kills | by_rest
    global_kill = fail_closed or "global" in doc.kills
    fresh: dict[str, RoutePlan] = {}
    if len(cfg.routes) != len(old.routes):
        return build_table(cfg, doc, unhealthy, fail_closed, state_unknown, ejected)
    for rc in cfg.routes:
        kept = old.by_name.get(rc.name)
        if kept is None or kept.config is not rc:
            return build_table(cfg, doc, unhealthy, fail_closed, state_unknown, ejected)
        if rc.name in names or rc.drill_for in names:
            made = kept._inputs
            if made is not None and not ejected and rc.name not in by_rest \
                    and rc.drill_for not in by_rest:
                fresh[rc.name] = _made(rc, kept, _rekilled(rc, doc, unhealthy, global_kill,
                                                           state_unknown, made))
            else:
                fresh[rc.name] = _plan(rc, doc, unhealthy, global_kill, state_unknown, kept,
                                       _prod(cfg, rc), ejected)
    return old.replacing(fresh, doc, unhealthy)  # (the others, and their order, kept)


def _changed_routes(a: StateDoc, b: StateDoc) -> set[str] | None:
    """Routes whose routing inputs differ between two documents (None: every route).

    Exact (a route missed is a kill or a rollback not enforced: tests/test_changed_routes
    checks it against the whole comparison), and cheap where it can be: a part both
    documents share (apply_change keeps the untouched ones: the committer's swap) is not
    read; a route's value both share costs no comparison of its entries. A receiver's
    documents share them too: its store decodes each pushed one sharing every value equal
    to the last one's (state/shareddecode.py; a kill's swap at 500 routes compared ~2,500
    history entries, 7.7M instructions; 1.9M now). Each route's value is compared once:
    a part that differs is not compared whole first, then again route by route."""
    changes = _changes(a, b)
    return None if changes is None else changes[0] | changes[1]


def _changes(a: StateDoc, b: StateDoc) -> tuple[set[str], set[str]] | None:
    """`_changed_routes`, as (the routes a kill or its lift names, the routes whose other
    routing inputs differ: override, rollout, history, versions rolled off)."""
    if ("global" in a.kills) != ("global" in b.kills):
        return None
    by_kills: set[str] = set()
    if a.kills is not b.kills:
        for key in a.kills.keys() ^ b.kills.keys():
            by_kills.add(key.split(":")[1])  # route:<r> or version:<r>:<v>
    names: set[str] = set()
    for x, y in ((a.overrides, b.overrides), (a.progress, b.progress), (a.history, b.history),
                 (a.rolled_off, b.rolled_off)):
        if x is y or not (x or y):
            continue
        # route by route in C: a value both share is passed at once (== sees it is the
        # same object, as a tuple's entries); each pair is compared once
        names.update(compress(x, map(ne, x.values(), map(y.get, x))))
        if len(y) != len(x) or y.keys() != x.keys():
            names.update(y.keys() - x.keys())
    return by_kills, names


def _prod(cfg: Config, rc: RouteConfig) -> RouteConfig | None:
    """The production route a drill route mirrors (None: `rc` is not a drill route)."""
    return cfg.route(rc.drill_for) if rc.drill_for is not None else None


def _dark_shadow(prod: RouteConfig, doc: StateDoc) -> str | None:
    """The production route's shadow while it is one (it serves nothing there)."""
    sh = prod.shadow
    if sh is None:
        return None
    ov = doc.overrides.get(prod.name)
    prog = doc.progress.get(prod.name)
    if ov is not None:
        stable, weight = ov.stable or prod.stable, ov.weights.get(sh.version, 0.0)
    elif prog is not None and (w := progressive_weights(prod, prog)) is not None:
        stable, weight = prod.stable, w.get(sh.version, 0.0)
    else:
        v = prod.version(sh.version)
        stable, weight = prod.stable, v.weight if v is not None else 0.0
    return None if stable == sh.version or weight > 0 else sh.version


def _plan(rc: RouteConfig, doc: StateDoc, unhealthy: frozenset[tuple[str, str]],
          global_kill: bool, state_unknown: bool = False,
          like: RoutePlan | None = None, prod: RouteConfig | None = None,
          ejected: frozenset[tuple[str, str]] = frozenset()) -> RoutePlan:
    """One route's plan from the config, the state and health (`like`: see RoutePlan;
    `prod`: the production route of a drill route; `ejected`: see `build_table`)."""
    killed, excluded = _kills(rc, doc, unhealthy, global_kill, state_unknown)
    ov = doc.overrides.get(rc.name)
    prog = doc.progress.get(rc.name)
    unpinnable: frozenset[str] = frozenset()
    unservable: tuple[str, ...] = ()
    rolled_off: frozenset[str] = frozenset()
    if ov is not None:
        weights = {v.name: float(ov.weights.get(v.name, 0.0)) for v in rc.versions}
        stable = ov.stable if ov.stable and rc.version(ov.stable) else rc.stable
        unpinnable = frozenset(n for n, w in weights.items() if w <= 0)
        if ov.kind in ("rollback", "auto_rollback"):
            rolled_off = unpinnable  # (no spare: routing.RoutePlan)
        if not any(w > 0 for w in weights.values()):
            unservable = override_unservable(rc, ov.weights)
    elif (w := progressive_weights(rc, prog)) is not None:
        weights, stable = w, rc.stable
    else:
        weights = {v.name: v.weight for v in rc.versions}
        stable = rc.stable
    if doc.rolled_off.get(rc.name):
        # a version a rollback took off (recorded: domain/rolledoff.py) stays off once the
        # rollback is released or replaced: at weight 0 it is no spare either, until an
        # operator names it (else the stable's kill gave it all the route's traffic)
        rolled_off |= {n for n in held_off(doc, rc) if weights.get(n, 0.0) <= 0}
    if rc.drill_for is not None and (pov := doc.overrides.get(rc.drill_for)) is not None:
        # a version the production route's override (a rollback) took out of its pins
        unpinnable |= {n for n, w in pov.weights.items() if w <= 0}
    if prod is not None and (dark := _dark_shadow(prod, doc)) is not None:
        # the production route's shadow never answers a client (CONTRACT §5.5): a drill
        # route's match is one any client can send, so it is not pinnable there either
        unpinnable |= {dark}
    prev = previous_stable(doc, rc, stable)  # (never a version a rollback took off)
    previous = prev.stable if prev is not None and rc.version(prev.stable) else None
    if not ejected:  # (the plan's inputs are final: the memo's case)
        return _made(rc, like, (weights, stable, excluded, killed, previous, unpinnable,
                                unservable, rolled_off))
    plan = RoutePlan(rc, weights, stable, excluded, killed, previous, unpinnable, like,
                     unservable, rolled_off)
    if killed is None and not plan.serves:
        # Passive ejection never removes the last version that can serve (README): not
        # only when it ejects, also once a kill or failed checks took the others out since
        # (the route served nothing for the rest of an ejection, up to 300 s)
        back = [n for n, why in excluded.items()
                if why == "unhealthy" and (rc.name, n) in ejected]
        if back:
            for n in back:
                del excluded[n]
            plan = RoutePlan(rc, weights, stable, excluded, killed, previous, unpinnable, like,
                             unservable, rolled_off)
    return plan


def _kills(rc: RouteConfig, doc: StateDoc, unhealthy: frozenset[tuple[str, str]],
           global_kill: bool, state_unknown: bool) -> tuple[str | None, dict[str, str]]:
    """A route's `killed` and `excluded` (its versions killed, else unhealthy). A drill
    route serves its production route's versions to any request that sends its match:
    that route's kills hold on it too (its own kills, a drill's, stay its own). The keys
    are `kill_key`'s, spelt here (no call, no generator a key: ~170 bytecodes of every
    instance's swap of a kill, for a route of two versions)."""
    kills = doc.kills
    name, prod = rc.name, rc.drill_for
    if state_unknown:
        killed: str | None = STATE_UNKNOWN
    elif global_kill:
        killed = "global"
    else:
        killed = "route" if f"route:{name}" in kills or (
            prod is not None and f"route:{prod}" in kills) else None
    excluded: dict[str, str] = {}
    for v in rc.versions:
        vn = v.name
        if f"version:{name}:{vn}" in kills or (
                prod is not None and f"version:{prod}:{vn}" in kills):
            excluded[vn] = "killed"
        elif (name, vn) in unhealthy:
            excluded[vn] = "unhealthy"
    return killed, excluded


def _rekilled(rc: RouteConfig, doc: StateDoc, unhealthy: frozenset[tuple[str, str]],
              global_kill: bool, state_unknown: bool,
              inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """`inputs` (a plan's, `_made`'s) with the route's kills read again from `doc`: the
    plan of a route whose kills alone changed (its override, rollout, history and versions
    rolled off, and its production route's, are those `inputs` were made of; no passive
    ejection: then every plan is made whole). What `_plan` returns for it, minus ~300
    bytecodes of a receiver's kill."""
    killed, excluded = _kills(rc, doc, unhealthy, global_kill, state_unknown)
    weights, stable, _, _, previous, unpinnable, unservable, rolled_off = inputs
    return weights, stable, excluded, killed, previous, unpinnable, unservable, rolled_off


def _made(rc: RouteConfig, like: RoutePlan | None, inputs: tuple[Any, ...]) -> RoutePlan:
    """The plan of `inputs` (RoutePlan's arguments but config and `like`): the plan `like`
    replaced if made of this config object and equal inputs (an unkill after its kill, the
    kill again: taken back on every instance, ~62k instructions), else a new one. A plan
    links only the one it replaced (`_prior`, not read by requests), which forgets its own."""
    if like is not None:
        prior = like._prior
        if prior is not None and prior.config is rc and prior._inputs == inputs:
            like._prior, prior._prior = None, like
            return prior
    weights, stable, excluded, killed, previous, unpinnable, unservable, rolled_off = inputs
    plan = RoutePlan(rc, weights, stable, excluded, killed, previous, unpinnable, like,
                     unservable, rolled_off)
    plan._inputs = inputs
    if like is not None and like.config is rc:
        plan._prior, like._prior = like, None
    return plan


def override_unservable(rc: RouteConfig, weights: Mapping[str, float]) -> tuple[str, ...]:
    """The versions a latched override gives traffic (weight > 0) that `rc` lacks. When it
    gives none to a version `rc` has (a rollback to v1 made through an instance whose file
    still has it, read by one whose file no longer does), no version of the route serves:
    the file's stable taking everything would undo the rollback on this instance in
    silence. Its fallback answers, else a 503 naming these (`release` ends it)."""
    return tuple(sorted(n for n, w in weights.items() if w > 0 and rc.version(n) is None))


def override_missing(rc: RouteConfig, doc: StateDoc) -> tuple[str, ...]:
    """The versions `rc`'s latched override gives traffic that `rc` lacks, whether or not
    another version still serves (a `weights` of v1 90 / v2 10 read by an instance without
    v1: v2 takes all of this instance's traffic, not 10 %). Reported, not refused."""
    ov = doc.overrides.get(rc.name)
    return override_unservable(rc, ov.weights) if ov is not None else ()
