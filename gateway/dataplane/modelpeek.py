"""Routing by the body's `model`: the body read as far as the lookup needs, then routed.

Owns what the proxy does for a request whose route may be chosen by its JSON body's
`model` field, or whose route has a version that rewrites it (a version's `model`: the
field is located here, and rewritten for whichever version, or shadow, gets the body): a
charset other than UTF-8 or a Content-Encoding refused (400), a body in memory looked up
at once, a larger one peeked at (at most `model_peek_bytes`, charged to
`server.model_peek_memory`: past it 503, retry), bounded by the longest total timeout of
any route (408), then routed on the table read again (a kill may have come meanwhile).
A base of `proxy.Proxy`, whose `_route` takes the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.dataplane.answers import Answers
from gateway.dataplane.headers import declared_charset
from gateway.dataplane.jsonpeek import Unreadable, find_model
from gateway.dataplane.peekbudget import PeekBudget
from gateway.dataplane.ports import TableSource
from gateway.dataplane.request import BadBody, BadHeader, BodyTimeout, ClientGone, OverBudget, Request
from gateway.domain.routetable import RouteTable

__all__ = ["ModelPeek"]


class ModelPeek(Answers):
    """The proxy's reading of a body's `model` (see the module docstring)."""

    # the proxy's (Proxy's)
    holder: TableSource
    peek_bytes: int
    peeks: PeekBudget[Request]
    _route: Callable[..., None]
    _spawn: Callable[[Coroutine[Any, Any, None]], None]

    def _by_model(self, req: Request, table: RouteTable, path: str, target: bytes,
                  host: str) -> None:
        """A route may match by the body's `model`, or rewrite it: read it (peeking when it is
        not all in)."""
        headers = req.headers
        charset = declared_charset(headers.get("content-type"))
        if charset is not None and charset not in ("utf-8", "utf8"):
            self._bad(req, "model_body", f"the body is declared {charset!r}; the body's 'model' "
                      "(read to route by it, or to rewrite it for a version's 'model') is read "
                      "in JSON as UTF-8 only")
            return
        coding = headers.get("content-encoding")
        if coding is not None and coding.strip(" \t").lower() not in ("", "identity"):
            # (its `model` is not in the bytes as they came, and a backend that decodes
            # request bodies, aiohttp's server does, reads one: a catch-all's, say)
            self._bad(req, "model_body", "the body has a Content-Encoding; the body's 'model' "
                      "(read to route by it, or to rewrite it for a version's 'model') is read "
                      "in an uncompressed body only")
            return
        if req.body_done and req.body_size <= self.peek_bytes:
            self._peeked(req, table, path, target, host, req.body(), True)
            return
        peeks = self.peeks
        peeks.open(req)
        if not peeks.charge(req, req.buffered):  # (RELIABILITY row 40, in bytes)
            self._over_budget(req)
            return
        self._spawn(self._peek(req, table, path, target, host))

    def _over_budget(self, req: Request) -> None:
        self.metrics.inc("killgate_requests_shed_total")
        self._error(req, 503, "overloaded", "this gateway holds as many request bodies as it "
                    "may while reading their 'model' (server.model_peek_memory); retry shortly",
                    extra=b"retry-after: 1\r\n")

    async def _peek(self, req: Request, table: RouteTable, path: str, target: bytes,
                    host: str) -> None:
        """Read as much of the body as the `model` lookup may need, then route. No route is
        chosen yet, so the longest total timeout of any route bounds the read (a client
        trickling its body must not hold the request, and its max_inflight slot, longer
        than any route would let it: 408)."""
        longest = max(p.total_timeout for p in table.routes)
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
        table = self.holder.held.table  # routed now: a kill may have come while it read
        try:
            self._peeked(req, table, path, target, host, prefix, complete)
        except BadHeader as exc:
            self._bad(req, exc.reason, str(exc))

    def _peeked(self, req: Request, table: RouteTable, path: str, target: bytes, host: str,
                prefix: bytes, complete: bool) -> None:
        peek = self.peek_bytes  # the window, exactly: however the bytes arrived
        try:
            field = find_model(prefix[:peek], complete and len(prefix) <= peek)
        except Unreadable as exc:
            self._bad(req, "model_body", str(exc))
            return
        self._route(req, table, path, target, host, prefix, field,
                    field.value if field else None, complete)
