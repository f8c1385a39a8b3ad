"""Concurrent requests for one render share it: GET /metrics.

An unauthenticated scrape renders the whole exposition on the loop the data plane shares
(~24 ms with 20 routes x 2 versions): a flood of scrapes (~40 a second) saturated it. A
cache for a second would answer a caller with counters from before its own action (38
test files, and users, read /metrics right after acting). Instead, the requests whose
handlers start in one turn of the loop (a flood's arrive together) share one render, made
after all of them started: each gets counters at least as new as its own request, and a
flood costs one render per turn of the loop, not one per request.

Scrapes that arrive one after another (50 a second, each in a turn of its own) still made
one render each: 79 % of the loop's time, the data plane's p50 95 ms and p99 199 ms under
such a flood (20 routes x 2 versions, tests/test_metrics_coalesced.py). So a render also
starts no sooner after the last one than keeps renders to RENDER_SHARE of the loop's time
(a render of c seconds: the next one c x (1/RENDER_SHARE - 1) after it ends); the calls that
arrive meanwhile wait for it, and share it. Still no answer older than its request, and a
scrape alone (Prometheus: one every few seconds) renders at once. The wait is at most
MAX_WAIT: a render measured long because the process was paused in it must not hold the
next scrape for four times the pause. Not in a thread: the
collectors read the data plane's counters, which the loop changes without a lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["MAX_WAIT", "RENDER_SHARE", "Coalesced"]

#: the most of the loop's time renders take under a flood (the data plane has the rest)
RENDER_SHARE = 0.2
#: the longest a render holds the next one (s): a render measured long because the process
#: was paused in it (SIGSTOP, a VM's stolen time) held every scrape 4 x the pause, past
#: Prometheus' scrape_timeout (the target read as down). A render that really takes longer
#: than MAX_WAIT x RENDER_SHARE / (1 - RENDER_SHARE) gets more than its share under a flood.
MAX_WAIT = 2.0

T = TypeVar("T")


class Coalesced(Generic[T]):
    def __init__(self, render: Callable[[Hashable], T], share: float = RENDER_SHARE) -> None:
        self.render = render
        self.share = share
        self._next: dict[Hashable, asyncio.Future[T]] = {}
        self._free_at = 0.0  # (the loop's clock) no render starts before then

    async def get(self, key: Hashable) -> T:
        """`render(key)`, made after this call started (never an earlier one's), shared
        with the calls for `key` made before it runs (scheduled for the loop's next turn,
        after the handlers already ready to run)."""
        fut = self._next.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._next[key] = loop.create_future()
            self._schedule(loop, key, fut)
        # (shielded: one caller gone does not cancel the render the others wait for)
        return await asyncio.shield(fut)

    def _schedule(self, loop: asyncio.AbstractEventLoop, key: Hashable,
                  fut: asyncio.Future[T]) -> None:
        wait = self._free_at - loop.time()
        if wait > 0:
            loop.call_later(wait, self._run, loop, key, fut)
        else:  # (the loop's next turn, after the handlers already ready to run)
            loop.call_soon(self._run, loop, key, fut)

    def _run(self, loop: asyncio.AbstractEventLoop, key: Hashable,
             fut: asyncio.Future[T]) -> None:
        if self._free_at > loop.time():  # another key's render came first: wait after it
            self._schedule(loop, key, fut)
            return
        del self._next[key]  # (a call from now on gets a render of its own)
        began = time.perf_counter()
        try:
            fut.set_result(self.render(key))
        except Exception as exc:  # noqa: BLE001 - said to every caller waiting for it
            fut.set_exception(exc)
            fut.exception()  # (retrieved: no "never retrieved" log when all callers left)
        finally:
            if self.share > 0:
                took = time.perf_counter() - began
                self._free_at = loop.time() + min(MAX_WAIT, took * (1 / self.share - 1))
