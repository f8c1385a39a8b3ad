"""Requests in flight in one process: counted for draining, findable for kills.

Owns `Handle` (one per request being forwarded: its route, version and backend exchange)
and `Inflight` (the set of handles and the in-flight count). A kill with abort_inflight
aborts the handles it covers (`on_table`, told of every new routing snapshot); the proxy
then ends those responses as CONTRACT §3 says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.domain.kills import covering, newly_aborting
from gateway.errors import UpstreamError
from gateway.log import event

if TYPE_CHECKING:
    from gateway.dataplane.exchange import Exchange
    from gateway.domain.routetable import RouteTable

__all__ = ["SHUTDOWN", "Aborted", "Handle", "Inflight"]

SHUTDOWN = "shutdown"  # an `Aborted` reason: the drain's deadline, not a kill

log = logging.getLogger("killgate")


class Aborted(UpstreamError):
    """An in-flight exchange was cut on purpose (a kill with abort_inflight): nothing more
    of its answer is read out, not even bytes already buffered or an end already seen."""

    cuts = True

    def __init__(self, reason: str, scope: str) -> None:
        self.reason = reason
        self.scope = scope
        super().__init__(reason)


class Handle:
    __slots__ = ("aborted", "exchange", "route", "version")

    def __init__(self, route: str) -> None:
        self.route = route
        self.version: str | None = None
        self.exchange: Exchange | None = None
        self.aborted: Aborted | None = None

    def streaming(self) -> bool:
        """Its answer has begun to reach its client (a shadow copy's never does)."""
        return False

    def abort(self, why: Aborted) -> None:
        if self.aborted is None:
            self.aborted = why
            ex = self.exchange
            if ex is not None:
                # (`Aborted.cuts`: what the backend sent that the client has not got yet,
                # up to the read buffer's high water behind a slow client, is not read out)
                ex.fail(why)


class Inflight:
    """Requests in flight in this process: counted for draining, findable for kills."""

    def __init__(self) -> None:
        self.handles: set[Handle] = set()
        # counted up by `Proxy.handle` and down by `Finish.done` (inline there: a call less
        # on every request), which sets `idle` when the count reaches 0 (`wait_idle`'s)
        self.count = 0
        self.idle: asyncio.Event | None = None

    def abort(self, match: Callable[[Handle], str | None], reason: str = "killed") -> int:
        """Cut the handles `match` names. A cut that raises (it runs its request's answer
        code at once) is logged and the others are still cut: a kill stops every request
        it covers, not those before the first failure."""
        n = 0
        for h in list(self.handles):
            scope = match(h)
            if scope is not None:
                n += 1
                try:
                    h.abort(Aborted(reason, scope))
                except Exception as exc:  # noqa: BLE001 - logged with its traceback
                    event(log, "inflight_abort_failed", logging.ERROR, route=h.route,
                          version=h.version, reason=reason, exc=exc,
                          consequence="this request is marked cut; the others it "
                                      "covers are cut all the same")
        return n

    def end_streams(self) -> int:
        """The drain's deadline: each answer already streaming is cut as a failure its client
        can tell (SSE: a final `killgate.error` event of type `shutdown`; any other body: an
        aborted connection), before the connections left are aborted. Requests not answered
        yet are left to that abort: their backend may have acted on them, and only a reset
        says "unknown"."""
        n = self.abort(lambda h: "shutdown" if h.streaming() else None, SHUTDOWN)
        event(log, "drain_deadline", streams_ended=n, inflight=self.count)
        return n

    def on_table(self, old: RouteTable, new: RouteTable) -> None:
        """A new routing snapshot is live (the table holder's listener): cut the requests
        in flight that a kill it brings covers (one with abort_inflight)."""
        added = newly_aborting(old.doc, new.doc)
        if not added:
            return
        # (a drill route serves its production route's versions: their kills cover it)
        drill_of = {p.name: p.config.drill_for for p in new.routes if p.config.drill_for}
        n = self.abort(lambda h: covering(added, h.route, h.version, drill_of.get(h.route)))
        if n:
            event(log, "inflight_aborted", count=n, generation=new.generation)

    async def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.idle = asyncio.Event()
            try:
                await asyncio.wait_for(self.idle.wait(), left)
            except TimeoutError:
                return False
        return True
