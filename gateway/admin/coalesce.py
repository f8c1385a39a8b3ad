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
next scrape for four times the pause.

A render may also be a generator (`sliced`): it runs a step at a time, each in a turn of
the loop of its own, so a render's work never holds the loop for long in one go (the
/metrics page: its values taken in the first step, ~2 ms at 100 routes x 2 versions x 3
status codes, then written from that copy in steps of about SLICE; one render held the
loop 215-360 ms of CPU there, telemetry/exposition.py). Its share is counted from the steps'
times, not the wall time the interleaved data plane adds; renders of other keys wait for
it to end. Not in a thread: the collectors read the data plane's counters, which the loop
changes without a lock, and a thread takes the loop's GIL for 5 ms switch intervals
(measured: a 21 ms stall of the loop with the library's render in a thread).

Renders waiting to start are capped at `max_pending` keys: a call for a key not already
waiting, past the cap, is refused (`Crowded`, with how long until one could start) rather
than queued behind them (each key's render queued after the others' at RENDER_SHARE: a
flood of distinct keys held a real scrape past its scrape_timeout). A call for a key
already waiting joins it, cap or not.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Generator, Hashable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["MAX_PENDING", "MAX_WAIT", "RENDER_SHARE", "SLICE", "Coalesced", "Crowded", "sliced"]

#: the most of the loop's time renders take under a flood (the data plane has the rest)
RENDER_SHARE = 0.2
#: the longest a render holds the next one (s): a render measured long because the process
#: was paused in it (SIGSTOP, a VM's stolen time) held every scrape 4 x the pause, past
#: Prometheus' scrape_timeout (the target read as down). A render that really takes longer
#: than MAX_WAIT x RENDER_SHARE / (1 - RENDER_SHARE) gets more than its share under a flood.
MAX_WAIT = 2.0

#: the most renders (distinct keys) waiting to start; past it a new key is refused
MAX_PENDING = 4

#: a sliced render's step: the loop's seconds it takes before it gives the loop back
SLICE = 0.001

T = TypeVar("T")
Steps = Generator[None, None, T]  # a sliced render: its steps, then its result


def sliced(parts: Iterable[bytes], slice_s: float = SLICE) -> Steps[bytes]:
    """`parts` joined, a step (a yield) whenever a step has taken `slice_s`."""
    out: list[bytes] = []
    began = time.perf_counter()
    for part in parts:
        out.append(part)
        if time.perf_counter() - began >= slice_s:
            yield
            began = time.perf_counter()
    yield  # (the join in a step of its own: ~1.3 ms for a 2.2 MB page)
    return b"".join(out)


class Crowded(Exception):
    """`max_pending` renders already wait to start; `retry_after`: seconds until one
    could (at least 1)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"{retry_after} s")
        self.retry_after = retry_after


class Coalesced(Generic[T]):
    def __init__(self, render: Callable[[Hashable], T | Steps[T]],
                 share: float = RENDER_SHARE, max_pending: int = MAX_PENDING) -> None:
        self.render = render
        self.share = share
        self.max_pending = max_pending
        self._next: dict[Hashable, asyncio.Future[T]] = {}
        self._free_at = 0.0  # (the loop's clock) no render starts before then
        self._busy = 0.0  # the loop's seconds the render under way has taken so far
        self._steps: Steps[T] | None = None  # a sliced render under way
        self._after: list[tuple[Hashable, asyncio.Future[T]]] = []  # waiting for it

    async def get(self, key: Hashable) -> T:
        """`render(key)`, made after this call started (never an earlier one's), shared
        with the calls for `key` made before it runs (scheduled for the loop's next turn,
        after the handlers already ready to run). Crowded: `max_pending` other keys'
        renders already wait to start."""
        fut = self._next.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            if len(self._next) >= self.max_pending:
                wait = max(self._free_at - loop.time(), 0.0) + MAX_WAIT * len(self._next)
                raise Crowded(max(1, math.ceil(wait)))
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
        if self._steps is not None:  # a sliced render under way: after it
            self._after.append((key, fut))
            return
        if self._free_at > loop.time():  # another key's render came first: wait after it
            self._schedule(loop, key, fut)
            return
        del self._next[key]  # (a call from now on gets a render of its own)
        self._busy = 0.0
        self._steps = None
        self._next_step(loop, fut, lambda: self.render(key))

    def _next_step(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[T],
                   step: Callable[[], T | Steps[T] | None]) -> None:
        """Run one step of the render (its start, or the next of its steps), timed."""
        began = time.perf_counter()
        try:
            made = step()
        except StopIteration as done:
            self._busy += time.perf_counter() - began
            self._end(loop, fut.set_result, done.value)
            return
        except Exception as exc:  # noqa: BLE001 - said to every caller waiting for it
            self._busy += time.perf_counter() - began
            self._end(loop, fut.set_exception, exc)
            fut.exception()  # (retrieved: no "never retrieved" log when all callers left)
            return
        self._busy += time.perf_counter() - began
        if self._steps is None and isinstance(made, Generator):
            self._steps = made
        if self._steps is None:
            self._end(loop, fut.set_result, made)
        else:  # (the next step in a turn of its own: the data plane's callbacks first)
            loop.call_soon(self._next_step, loop, fut, self._steps.__next__)

    def _end(self, loop: asyncio.AbstractEventLoop, settle: Callable[[Any], None],
             outcome: object) -> None:
        settle(outcome)
        self._steps = None
        if self.share > 0:
            self._free_at = loop.time() + min(MAX_WAIT, self._busy * (1 / self.share - 1))
        after, self._after = self._after, []
        for key, waiting in after:
            self._schedule(loop, key, waiting)
