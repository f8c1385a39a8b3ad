"""The routing snapshot: every route's plan, most specific first, and the match of a
request to its route.

Owns `RouteTable` (immutable: replaced as a whole on any change, built by
domain/tablebuild.py; a request reads it once and keeps it to the end). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain.routing import RoutePlan
from gateway.domain.statedoc import StateDoc

__all__ = ["RouteTable"]

_MEMO_MAX = 4096  # `needs_model`'s memo: pairs kept (cleared when full)
_MEMO_KEY = 512  # a longer path or Host is not kept


class RouteTable:
    """All routes, most specific first. Immutable; replaced as a whole on any change."""

    __slots__ = ("_model_match", "_needs", "_peek_checks", "by_name", "doc", "generation",
                 "model_routes", "replaced", "rewriting", "routes", "unhealthy")
    _needs: dict[tuple[str, str], RoutePlan | bool] | None
    _peek_checks: tuple[RoutePlan, ...]

    def __init__(self, plans: list[RoutePlan], doc: StateDoc,
                 unhealthy: frozenset[tuple[str, str]]) -> None:
        plans.sort(key=lambda p: (-(len(p.prefix) if p.prefix else -1), -p.match_keys))
        self.routes = tuple(plans)
        self.by_name = {p.name: p for p in plans}
        #: made by `replacing`: (the id of the table it was made from, the routes whose
        #: plans it replaced), for a swap's listeners to read only those (an id, not the
        #: table: each table would keep every one before it alive)
        self.replaced: tuple[int, tuple[str, ...]] | None = None
        #: the routes with a version whose `model` rewrites the body's (a shadow's too); not
        #: a killed route, nor a killed version: their answer reads no body (a kill answers
        #: 503 killed at once, never a 400 for a body no backend would get, nor after a peek)
        self.rewriting = frozenset(p.name for p in plans if _rewrites(p))
        self._model_match = any(p.model is not None for p in plans)
        self._derived(doc, unhealthy)

    def replacing(self, fresh: Mapping[str, RoutePlan], doc: StateDoc,
                  unhealthy: frozenset[tuple[str, str]]) -> RouteTable:
        """This table with the plans of `fresh` (by route name) in place of its own, for
        `doc`: the same as a table built of all the plans when each plan of `fresh` is of
        the same config object as the one it replaces (rebuild_table: the order and every
        config-made part are its). What a kill's swap builds on every instance: one plan
        in place, not every route sorted and checked again (~80 % of the swap at 500
        routes, callgrind)."""
        new: RouteTable = object.__new__(RouteTable)
        # (the route order is by_name's: both were made of the sorted plans)
        new.routes = tuple(map(fresh.get, self.by_name, self.routes))
        new.by_name = {**self.by_name, **fresh}
        new.replaced = (id(self), tuple(fresh))
        new.rewriting = self.rewriting.difference(fresh).union(
            [n for n, p in fresh.items() if _rewrites(p)])
        new._model_match = self._model_match
        new._derived(doc, unhealthy, self if new.rewriting == self.rewriting else None)
        return new

    def _derived(self, doc: StateDoc, unhealthy: frozenset[tuple[str, str]],
                 same: RouteTable | None = None) -> None:
        """The parts made of `routes`, `rewriting` and `_model_match` (`same`: a table
        with equal ones and routes of the same configs, whose are taken)."""
        #: whether any request may need its body's `model` read (else none is peeked at)
        self.model_routes = bool(self.rewriting) or self._model_match
        if same is not None:
            self._peek_checks = self.routes[:len(same._peek_checks)]
            self._needs = None if same._needs is None else {}
        else:
            # what `needs_model` looks at: every route up to the last that matches by
            # `model` or rewrites it (one after it never decides that a body is read); a
            # route without match.model before it is there too: when it matches, no route
            # after it is chosen
            last = max((i for i, p in enumerate(self.routes)
                        if p.name in self.rewriting or p.model is not None), default=-1)
            self._peek_checks = self.routes[:last + 1]
            #: (path, Host) -> `needs_model`'s answer, when none of those routes matches by
            #: header fields (None: one does, and every answer is made afresh). A memo of
            #: this table's own answers (the same few pairs, request after request: a
            #: request to a route after ten others matched eleven routes for it); bounded,
            #: cleared when full
            self._needs = None if any(p.headers for p in self._peek_checks) else {}
        self.doc = doc
        self.generation = doc.generation
        self.unhealthy = unhealthy

    def needs_model(self, path: str, host: str,
                    headers: Mapping[str, str]) -> RoutePlan | bool:
        """Whether this request's body's `model` may have to be read: True when it could
        change which route matches; the route it goes to when that is decided without it
        and some version of it rewrites it (then only a request given such a version has
        its body read: `dataplane/modelpeek.py`); False when it is never read."""
        if not self.model_routes:
            return False
        needs = self._needs
        if needs is not None:
            try:
                return needs[path, host]
            except KeyError:
                pass
        need: RoutePlan | bool = False
        for p in self._peek_checks:
            if p.model is not None:
                if p.matches(path, host, headers, p.model):
                    need = True
                    break
            elif p.matches(path, host, headers, None):
                # the route it goes to, whatever its model: no route after it can be chosen
                need = p if p.name in self.rewriting else False
                break
        if needs is not None and len(path) <= _MEMO_KEY and len(host) <= _MEMO_KEY:
            if len(needs) >= _MEMO_MAX:
                needs.clear()
            needs[path, host] = need
        return need

    def match(self, path: str, host: str, headers: Mapping[str, str],
              model: str | None) -> RoutePlan | None:
        for p in self.routes:
            if p.matches(path, host, headers, model):
                return p
        return None


def _rewrites(p: RoutePlan) -> bool:
    """Whether a plan is one of a table's `rewriting`."""
    return not p.killed and p.serves and any(
        t.model for n, t in p.targets.items() if p.excluded.get(n) != "killed")
