"""A request's version, once chosen off `Proxy._route`'s inline path, taken on: for the
model peek's version-first decision (`ModelPeek._version_first`), the same steps `_route`
keeps inline (a call less on every request there): the choice traced, an unavailable
version answered, a complete body taken, a drill's fault looked up, the sticky key's share
of the canary's verdict counted (`_counted`: analysis.max_per_key and max_per_client,
domain/keyquota.py; `_route` calls it too), and the flight started (the spare one when
nothing else refers to it). A base of `proxy.Proxy`, which owns the state it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from sys import getrefcount

from gateway.dataplane.clock import Clock
from gateway.dataplane.drillfault import FaultGate
from gateway.dataplane.flight import Flight
from gateway.dataplane.jsonpeek import ModelField
from gateway.dataplane.outgoing import forwarded_for
from gateway.dataplane.request import Request
from gateway.dataplane.spans import trace_choice
from gateway.domain.keyquota import KeyQuota
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import Choice, RoutePlan
from gateway.forwarded import ClientAddress

__all__ = ["Chosen"]


class Chosen:
    """_chosen and _counted (see the module docstring)."""

    # the proxy's state they read (Proxy's)
    faults: FaultGate
    quota: KeyQuota
    client_address: ClientAddress | None
    clock: Clock
    _spare: Flight
    _free_refs: int
    unavailable: Callable[..., None]  # (answers.py's)


    def _chosen(self, req: Request, table: RouteTable, plan: RoutePlan, choice: Choice,
                path: str, target: bytes, prefix: bytes | None, field: ModelField | None,
                complete: bool) -> None:
        """The rest of `_route` once the version is chosen, for `ModelPeek._version_first`
        (the same steps: `_route` keeps them inline, a call less on every request)."""
        if req.span is not None:
            trace_choice(req.span, plan, choice, field.value if field else None, path)
        if choice.target is None:
            self.unavailable(req, plan, choice.decision)
            return
        if prefix is None and req.body_done:
            prefix = req.body()
            complete = True
        faulted = (self.faults.version(req.headers, table.doc, plan.name) if table.doc.drills
                   else None)
        counted = True  # (the sticky key's bound, as `_route` applies it)
        if (limit := plan.key_limit) is not None:
            sticky = req.headers.get(plan.sticky_header) if plan.sticky_header else None
            if sticky is not None:
                counted = self._counted(req, plan.name, sticky, limit)
        flight = self._spare  # (as `_route`: the spare when nothing else refers to it)
        if getrefcount(flight) != self._free_refs:
            flight = Flight()
        flight.start(self, req, plan, choice.target, choice.decision,  # type: ignore[arg-type]
                     prefix, complete, field, target, path, faulted, counted)  # (a Proxy)

    def _counted(self, req: Request, route: str, sticky: str,
                 limit: tuple[int | None, int | None, float]) -> bool:
        """Whether a request with sticky key `sticky` counts toward the canary's verdict:
        within its key's `analysis.max_per_key`, and its client address's
        `max_per_client`, this window (domain/keyquota.py)."""
        per_key, per_client, window = limit
        client = None
        if per_client is not None:
            trusted = self.client_address  # behind trusted proxies: the client they vouch for
            client = req.remote if trusted is None else \
                trusted.client(req.remote, forwarded_for(req))
        return self.quota.admit(route, sticky, per_key, window, self.clock.now, client,
                                per_client)
