"""Concurrent requests for one render share it: GET /metrics.

An unauthenticated scrape renders the whole exposition on the loop the data plane shares
(~24 ms with 20 routes x 2 versions): a flood of scrapes (~40 a second) saturated it. A
cache for a second would answer a caller with counters from before its own action (38
test files, and users, read /metrics right after acting). Instead, the requests whose
handlers start in one turn of the loop (a flood's arrive together) share one render, made
after all of them started: each gets counters at least as new as its own request, and a
flood costs one render per turn of the loop, not one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Coalesced"]

T = TypeVar("T")


class Coalesced(Generic[T]):
    def __init__(self, render: Callable[[Hashable], T]) -> None:
        self.render = render
        self._next: dict[Hashable, asyncio.Future[T]] = {}

    async def get(self, key: Hashable) -> T:
        """`render(key)`, made after this call started (never an earlier one's), shared
        with the calls for `key` made before it runs (scheduled for the loop's next turn,
        after the handlers already ready to run)."""
        fut = self._next.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._next[key] = loop.create_future()
            loop.call_soon(self._run, key, fut)
        # (shielded: one caller gone does not cancel the render the others wait for)
        return await asyncio.shield(fut)

    def _run(self, key: Hashable, fut: asyncio.Future[T]) -> None:
        del self._next[key]  # (a call from now on gets a render of its own)
        try:
            fut.set_result(self.render(key))
        except Exception as exc:  # noqa: BLE001 - said to every caller waiting for it
            fut.set_exception(exc)
            fut.exception()  # (retrieved: no "never retrieved" log when all callers left)
