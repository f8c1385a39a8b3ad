"""The one reference the data plane reads: the current `RouteTable`, swapped whole.

Owns the inputs of the routing snapshot (config, replicated state, health, fail-closed,
whether the kill state was ever loaded) with the table built from them, as one frozen
`Held` value. Any change builds the new table aside from the new inputs and replaces the
whole value in one assignment: if building raises, nothing changed (doc, config and table
stay as they were). Listeners hear (old, new) after each swap (used to abort in-flight
requests covered by a new kill); one that raises is logged and the others still hear it.
Requests read `holder.table` once and keep that table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, is_not
from typing import Any

from gateway.configfile import LoadedConfig
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import RoutePlan
from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.domain.tablebuild import build_table, override_missing, rebuild_table
from gateway.log import event

__all__ = ["Held", "TableHolder", "with_local"]

log = logging.getLogger("killgate.routing")

Listener = Callable[[RouteTable, RouteTable], None]


@dataclass(frozen=True, slots=True)
class Held:
    """Everything the routing snapshot is made of, and the snapshot itself."""

    loaded: LoadedConfig
    doc: StateDoc
    unhealthy: frozenset[tuple[str, str]]
    fail_closed: bool
    #: the kill state was never loaded (no sync, no snapshot) and policy requires it
    #: (`state.ready_without_state: false`): every route is closed (routing.STATE_UNKNOWN)
    state_unknown: bool
    table: RouteTable
    #: the versions of `unhealthy` out only by passive ejection (tablebuild.build_table)
    ejected: frozenset[tuple[str, str]] = frozenset()
    #: emergency local kills not yet in the store (state/localkills.py): enforced as if
    #: `doc` held them (the table's document does), `doc` itself stays the store's
    local: Mapping[str, KillFlag] = field(default_factory=dict)


#: what a table is built from (Held's fields but the table)
_INPUTS = frozenset({"loaded", "doc", "unhealthy", "fail_closed", "state_unknown", "ejected",
                     "local"})


class TableHolder:
    def __init__(self, loaded: LoadedConfig, doc: StateDoc | None = None,
                 state_unknown: bool = False) -> None:
        """`state_unknown=True` until the state sync calls `state_loaded()` (the serving
        gateway's holder); a holder built from a known document starts open."""
        doc = doc or StateDoc()
        self._listeners: list[Listener] = []
        self.held = Held(loaded, doc, frozenset(), False, state_unknown,
                         build_table(loaded.config, doc, state_unknown=state_unknown))
        _warn_unservable(None, self.held.table)

    # read-only views of the one held value
    @property
    def table(self) -> RouteTable:
        return self.held.table

    @property
    def doc(self) -> StateDoc:
        return self.held.doc

    @property
    def loaded(self) -> LoadedConfig:
        return self.held.loaded

    @property
    def unhealthy(self) -> frozenset[tuple[str, str]]:
        return self.held.unhealthy

    @property
    def fail_closed(self) -> bool:
        return self.held.fail_closed

    @property
    def state_unknown(self) -> bool:
        return self.held.state_unknown

    def listen(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _swap(self, **changes: Any) -> None:
        """Build the table from the changed inputs aside, then swap all of it at once. A new
        document alone rebuilds only the routes it changes (a kill flips one plan)."""
        old = self.held
        # the inputs as changed, and one Held made of them and the table (not two
        # dataclasses.replace: ~30k instructions a kill on every instance, callgrind)
        if not changes.keys() <= _INPUTS:
            raise TypeError(f"not an input of the table: {sorted(changes.keys() - _INPUTS)}")
        get = changes.get
        loaded, doc = get("loaded", old.loaded), get("doc", old.doc)
        unhealthy, ejected = get("unhealthy", old.unhealthy), get("ejected", old.ejected)
        fail_closed = get("fail_closed", old.fail_closed)
        state_unknown = get("state_unknown", old.state_unknown)
        local = get("local", old.local)
        routed = with_local(doc, local)  # (doc itself while nothing is killed locally)
        build = rebuild_table if changes.keys() == {"doc"} else None
        table = (build(old.table, loaded.config, routed, unhealthy, fail_closed,
                       state_unknown, ejected)
                 if build is not None else
                 build_table(loaded.config, routed, unhealthy, fail_closed, state_unknown,
                             ejected))
        self._install(old, Held(loaded, doc, unhealthy, fail_closed, state_unknown, table,
                                ejected, local))

    def _install(self, old: Held, new: Held) -> None:
        """`new` held (the one assignment), then told to the listeners."""
        self.held = new
        table = new.table
        for fn in self._listeners:  # (the table is live: one that fails stops no other)
            try:
                fn(old.table, table)
            except Exception as exc:  # noqa: BLE001 - logged with its traceback
                event(log, "table_listener_failed", logging.ERROR,
                      listener=getattr(fn, "__qualname__", repr(fn)), exc=exc,
                      consequence="the new routing table is live; this listener missed it")
        try:  # (after the listeners, which cut what a new kill covers, and as guarded)
            _warn_unservable(old.table, table)
        except Exception as exc:  # noqa: BLE001 - logged with its traceback
            event(log, "table_warnings_failed", logging.ERROR, exc=exc,
                  consequence="the new routing table is live; its override warnings "
                              "(override_unservable) were not logged")

    def apply_doc(self, doc: StateDoc) -> bool:
        """Adopt `doc` if it is newer than what we hold; duplicates and stale ones are no-ops.
        (`_swap(doc=doc)`, its inputs read straight from what is held: every instance's
        swap of every kill.)"""
        old = self.held
        if doc.generation <= old.doc.generation:
            return False
        local = old.local
        table = rebuild_table(old.table, old.loaded.config,
                              with_local(doc, local) if local else doc, old.unhealthy,
                              old.fail_closed, old.state_unknown, old.ejected)
        self._install(old, Held(old.loaded, doc, old.unhealthy, old.fail_closed,
                                old.state_unknown, table, old.ejected, local))
        return True

    def set_unhealthy(self, unhealthy: frozenset[tuple[str, str]],
                      ejected: frozenset[tuple[str, str]] = frozenset()) -> None:
        """`ejected`: those of `unhealthy` out only by passive ejection (their checks pass)."""
        if unhealthy != self.held.unhealthy or ejected != self.held.ejected:
            self._swap(unhealthy=unhealthy, ejected=ejected)

    def set_fail_closed(self, on: bool) -> None:
        if on != self.held.fail_closed:
            self._swap(fail_closed=on)

    def state_loaded(self) -> bool:
        """The kill state is known (synced, or read from a snapshot, or policy says serve
        without it): open the routes. One way only; True when this call opened them."""
        if not self.held.state_unknown:
            return False
        self._swap(state_unknown=False)
        return True

    def set_config(self, loaded: LoadedConfig) -> None:
        self._swap(loaded=loaded)

    @property
    def local_kills(self) -> Mapping[str, KillFlag]:
        return self.held.local

    def set_local_kills(self, local: Mapping[str, KillFlag]) -> None:
        """Enforce these emergency local kills (the journal's) beside the document's."""
        if dict(local) != dict(self.held.local):
            self._swap(local=dict(local))


def with_local(doc: StateDoc, local: Mapping[str, KillFlag]) -> StateDoc:
    """`doc` with the local kills it lacks (a kill in the document keeps its own flag)."""
    extra = {k: f for k, f in local.items() if k not in doc.kills}
    return doc.with_changes(kills={**doc.kills, **extra}) if extra else doc


_NAME = attrgetter("name")


def _warn_unservable(old: RouteTable | None, new: RouteTable) -> None:
    """One line per route as a table is built into (or out of) serving nothing because its
    latched override names only versions this config lacks, and one as its override comes to
    name some this config lacks while others serve (not one per request). A plan `old` has
    too (rebuild_table kept it: its route's override did not change) is passed: it has
    nothing to say now (each of its events compares with itself), and a kill's swap on
    every instance read each of 500 routes' overrides (~25 % of it, callgrind); a table
    `replacing` made of `old` names the plans it replaced: only those are read (the loop
    over every route to find them was ~0.4M instructions of a kill's swap at 500 routes)."""
    if old is None:
        routes: Iterable[RoutePlan] = new.routes
    elif new.replaced is not None and new.replaced[0] == id(old):
        if new.doc.overrides is old.doc.overrides or new.doc.overrides == old.doc.overrides:
            return  # (the same configs, `replacing`'s, and overrides: nothing to say)
        routes = [new.by_name[n] for n in new.replaced[1]]  # (old is alive: its id is its)
    else:
        routes = compress(new.routes, map(is_not, new.routes,
                                          map(old.by_name.get, map(_NAME, new.routes))))
    for plan in routes:
        was = old.by_name[plan.name].override_unservable if old is not None \
            and plan.name in old.by_name else ()
        missing = () if plan.override_unservable else override_missing(plan.config, new.doc)
        if missing and (old is None or plan.name not in old.by_name
                        or missing != override_missing(old.by_name[plan.name].config,
                                                       old.doc)
                        or was):
            event(log, "override_partly_unservable", logging.WARNING, route=plan.name,
                  versions=",".join(missing),
                  action="the route's latched override gives traffic to these versions too, "
                  "which this instance's config does not have: its other versions take "
                  f"their share here; run `killgate release {plan.name}` or load a config "
                  "with them")
        if plan.override_unservable == was:
            continue
        if plan.override_unservable:
            event(log, "override_unservable", logging.WARNING, route=plan.name,
                  versions=",".join(plan.override_unservable),
                  action="the route's latched override gives traffic only to these versions, "
                  "which this instance's config does not have: no version serves here (its "
                  f"fallback, else 503); run `killgate release {plan.name}` or load a config "
                  "with them")
        else:
            event(log, "override_servable", logging.INFO, route=plan.name,
                  action="the route's override no longer names only missing versions: it "
                  "serves again")
