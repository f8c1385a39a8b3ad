"""How long the running event loop is held: the watch the loop-cost tests share.

`LoopWatch`, entered with `async with`: a task on the loop sleeps `tick` again and again,
and `worst` is the longest it overslept since the watch began (or since a test set it back
to 0.0): how long the loop was held at once by whatever ran on it (a comparison, a
publish) while clients' requests and kills waited.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["LoopWatch"]


class LoopWatch:
    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.worst = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            t = loop.time()
            await asyncio.sleep(self.tick)
            self.worst = max(self.worst, loop.time() - t - self.tick)

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
