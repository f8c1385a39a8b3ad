"""A load generator running in the test's event loop until stopped (its start/stop only;
each test module decides how it sends and what it records)."""

from __future__ import annotations

import asyncio

__all__ = ["BackgroundLoad"]


class BackgroundLoad:
    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
