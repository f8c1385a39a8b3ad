"""A call made at most once per `interval`, and never lost: the first poke calls at once,
pokes within the interval after it make one more call at its end (leading and trailing
edge). Loop timers only, no task; standard library only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    def __init__(self, interval: float, fn: Callable[[], None]) -> None:
        self.interval = interval
        self.fn = fn
        self._next = 0.0  # loop time before which a poke waits for the trailing call
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled = False

    def poke(self) -> None:
        if self._timer is not None or self._cancelled:
            return  # the trailing call is due: it covers this poke too (or stopped)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next:
            self._call(loop)
        else:
            self._timer = loop.call_at(self._next, self._fire, loop)

    def cancel(self) -> None:
        """No call from now on, and none for later pokes (a stop: its owner's work may
        still hand it pokes while it winds down)."""
        self._cancelled = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._call(loop)

    def _call(self, loop: asyncio.AbstractEventLoop) -> None:
        self._next = loop.time() + self.interval
        self.fn()
