"""Routing by the body's `model`: the body read as far as the lookup needs, then routed.

Owns what the proxy does for a request whose route may be chosen by its JSON body's
`model` field, or whose route has a version that rewrites it (a version's `model`: the
field is located here, and rewritten for whichever version, or shadow, gets the body): a
charset other than UTF-8 or a Content-Encoding refused (400), a body in memory looked up
at once, a larger one peeked at (at most `model_peek_bytes`, charged to
`server.model_peek_memory`: past it 503, retry), bounded by the longest total timeout of
any route (408), then routed on the table read again (a kill may have come meanwhile).
On a route that matches without the body (no route matching by `model` could take the
request) the version is chosen first and the body read only when that version rewrites
its `model` (`_version_first`): a request to a version that rewrites nothing is never
refused for its body (a failover or a shadow copy to one that does: `heldmodel.py`).
A base of `proxy.Proxy`, whose `_route` (or `_chosen`) takes the result.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.dataplane.answers import Answers
from gateway.dataplane.formpeek import body_model
from gateway.dataplane.formscan import scan_held
from gateway.dataplane.heldmodel import FORM_NOT_REWRITTEN, coding_refused
from gateway.dataplane.jsonpeek import Unreadable
from gateway.dataplane.peekbudget import PeekBudget
from gateway.dataplane.ports import TableSource
from gateway.dataplane.request import BadBody, BadHeader, BodyTimeout, ClientGone, OverBudget, Request
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import Choice, RoutePlan

__all__ = ["ModelPeek"]


class ModelPeek(Answers):
    """The proxy's reading of a body's `model` (see the module docstring)."""

    # the proxy's (Proxy's)
    holder: TableSource
    peek_bytes: int
    peeks: PeekBudget[Request]
    _route: Callable[..., None]
    _chosen: Callable[..., None]
    _spawn: Callable[[Coroutine[Any, Any, None]], None]

    def _read_model(self, req: Request, table: RouteTable, path: str, target: bytes,
                    host: str, chosen: tuple[RoutePlan, Choice] | None) -> None:
        """Read the body's `model`: a Content-Encoding or charset refused (400); a body all
        in memory within the window looked up at once, a larger one peeked at
        (`_peek_later`). Then routed by it (`_peeked`), or, with `chosen` (the route and
        version `_version_first` decided without it), rewritten for that version."""
        why = coding_refused(req.headers)
        if why is not None:
            self._bad(req, "model_body", why)
            return
        if req.body_done and req.body_size <= self.peek_bytes:
            if chosen is None:
                self._peeked(req, table, path, target, host, req.body(), True)
            else:
                self._rewrite_read(req, table, chosen[0], chosen[1], path, target, req.body(),
                                   True)
            return
        self._peek_later(req, table, path, target, host, chosen)

    def _peek_later(self, req: Request, table: RouteTable, path: str, target: bytes,
                    host: str, chosen: tuple[RoutePlan, Choice] | None) -> None:
        peeks = self.peeks
        peeks.open(req)
        if not peeks.charge(req, req.buffered):  # (RELIABILITY row 40, in bytes)
            self._over_budget(req)
            return
        self._spawn(self._peek(req, table, path, target, host, chosen))

    def _over_budget(self, req: Request) -> None:
        self.metrics.inc("killgate_requests_shed_total")
        self._error(req, 503, "overloaded", "this gateway holds as many request bodies as it "
                    "may while reading their 'model' (server.model_peek_memory); retry shortly",
                    extra=b"retry-after: 1\r\n")

    async def _peek(self, req: Request, table: RouteTable, path: str, target: bytes,
                    host: str, chosen: tuple[RoutePlan, Choice] | None = None) -> None:
        """Read as much of the body as the `model` lookup may need, then route. No route is
        chosen yet, so the longest total timeout of any route bounds the read (a client
        trickling its body must not hold the request, and its max_inflight slot, longer
        than any route would let it: 408); or `chosen`, the route and version decided
        before the read (`_version_first`): that route's."""
        longest = (max(p.total_timeout for p in table.routes) if chosen is None
                   else chosen[0].total_timeout)
        try:
            try:  # (one timer, for the requests whose body is not in at their head)
                async with asyncio.timeout(longest):
                    prefix = await req.read_prefix(self.peek_bytes, self.max_body,
                                                   lambda n: self.peeks.charge(req, n))
            except TimeoutError:
                self.clock.now = self.loop.time()  # (a timer, not bytes: see upstream._sweep)
                raise BodyTimeout("the request body did not arrive within the routes' "
                                  "total timeout") from None
        except (BodyTimeout, BadBody) as exc:
            self.body_failed(req, None, None, "", exc)
            return
        except ClientGone:
            return
        except OverBudget:
            self._over_budget(req)
            return
        if prefix is None:
            self.too_large(req, None)
            return
        complete = req.body_done and len(prefix) == req.body_size
        now = self.holder.held.table  # routed now: a kill may have come while it read
        try:
            if chosen is not None and now.by_name.get(chosen[0].name) is chosen[0]:
                # (its route's plan is the same: no kill, weight or health change of it came,
                # so the version drawn before the read holds; drawn again, a request read
                # for the canary would be the canary's only at its weight squared)
                self._rewrite_read(req, now, chosen[0], chosen[1], path, target, prefix,
                                   complete)
            else:
                self._peeked(req, now, path, target, host, prefix, complete)
        except BadHeader as exc:
            self._bad(req, exc.reason, str(exc))

    def _peeked(self, req: Request, table: RouteTable, path: str, target: bytes, host: str,
                prefix: bytes, complete: bool) -> None:
        peek = self.peek_bytes  # the window, exactly: however the bytes arrived
        try:
            field = body_model(req.headers.get("content-type"), prefix[:peek],
                               complete and len(prefix) <= peek)
            if field is not None and field.form and complete and len(prefix) > peek:
                # (a multipart body, all in memory, read no further than the window: the
                # rest is scanned now for a second `model` part; one still to come is
                # scanned as it streams, prefix and all: `slowpath._chain`)
                scan_held(req.headers, prefix)
        except Unreadable as exc:
            self._bad(req, "model_body", str(exc))
            return
        self._route(req, table, path, target, host, prefix, field,
                    field.value if field else None, complete)

    # ------------------------------------------------------------------ version first

    def _version_first(self, req: Request, table: RouteTable, plan: RoutePlan, path: str,
                       target: bytes, host: str) -> None:
        """A route matched without the body (no route that matches by `model` could take
        the request), some of whose versions rewrite the body's `model`: the version is
        chosen first, as `_route` chooses it (pins, sticky keys, weights, kills, health),
        and the body is read only when that version rewrites it. A request to a version that
        rewrites nothing streams as it came, whatever its size, encoding or charset."""
        req.rec.stable = plan.stable
        choice = plan.fixed  # (`_route`'s choice, as it makes it)
        if choice is None:
            pin = req.headers.get("x-killgate-pin") if plan.allow_pin else None
            if pin is not None and pin not in plan.targets:
                self._error(req, 400, "unknown_version",
                            f"x-killgate-pin names no version of route {plan.name!r}", plan)
                return
            sticky = req.headers.get(plan.sticky_header) if plan.sticky_header else None
            choice = plan.choose(sticky, pin, random.random)
        chosen = choice.target
        if chosen is None or not chosen.model:  # (a kill, the fallback: no body is read)
            self._chosen(req, table, plan, choice, path, target, None, None, False)
            return
        self._read_model(req, table, path, target, host, (plan, choice))

    def _rewrite_read(self, req: Request, table: RouteTable, plan: RoutePlan, choice: Choice,
                      path: str, target: bytes, prefix: bytes, complete: bool) -> None:
        peek = self.peek_bytes  # the window, exactly, as `_peeked` reads it
        try:
            field = body_model(req.headers.get("content-type"), prefix[:peek],
                               complete and len(prefix) <= peek)
        except Unreadable as exc:
            self._bad(req, "model_body", str(exc))
            return
        if field is not None and field.form:  # (`_version_first`: the version rewrites)
            self._bad(req, "model_body", FORM_NOT_REWRITTEN)
            return
        self._chosen(req, table, plan, choice, path, target, prefix, field, complete)
