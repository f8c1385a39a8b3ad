"""The drill tests' independent client: its own requests to every instance while a drill
runs (`Observer`, what it `Seen`), and `agree`: the drill report's time per instance
against what it saw.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import ClientSession

__all__ = ["PATH", "Observer", "Seen", "agree", "first_after"]

PATH = "/v2/models/iris"


@dataclass
class Seen:
    instance: str
    sent: float  # unix time
    recv: float
    status: int
    version: str | None
    decision: str | None


class Observer:
    """The independent client: its own requests to every instance, 50 per second each."""

    def __init__(self, s: ClientSession, urls: list[str], headers: dict[str, str],
                 path: str = PATH, rate: float = 50) -> None:
        self.s, self.urls, self.headers, self.path, self.period = s, urls, headers, path, 1 / rate
        self.seen: list[Seen] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None

    async def _one(self, url: str) -> None:
        t = time.time()
        try:
            async with self.s.get(url + self.path, headers=self.headers) as r:
                await r.read()
                self.seen.append(Seen(url, t, time.time(), r.status,
                                      r.headers.get("x-killgate-version"),
                                      r.headers.get("x-killgate-decision")))
        except (OSError, aiohttp.ClientError):
            self.seen.append(Seen(url, t, time.time(), 0, None, None))

    async def _pace(self, url: str) -> None:
        tasks = set()
        while not self._stop.is_set():
            task = asyncio.create_task(self._one(url))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.period)
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def start(self) -> None:
        self._task = asyncio.ensure_future(asyncio.gather(*(self._pace(u) for u in self.urls)))

    async def stop(self) -> list[Seen]:
        self._stop.set()
        assert self._task is not None
        await self._task
        return self.seen


def first_after(seen: list[Seen], url: str, t: float, pred: Any) -> Seen | None:
    return next((x for x in sorted(seen, key=lambda x: x.sent)
                 if x.instance == url and x.sent >= t and pred(x)), None)


def agree(report: dict[str, Any], seen: list[Seen], measure: str, pred: Any,
          rollback: bool = False) -> None:
    """The report's time per instance against what the independent client saw: both are
    late by at most one request interval (plus scheduling noise on a shared machine)."""
    t_inject = report["t0_unix"] + report["marks_ms"]["inject_sent"] / 1000
    t_restore = report["t0_unix"] + report["marks_ms"]["restore_sent"] / 1000
    for row in report["instances"]:
        mine = [x for x in seen if x.instance == row["instance"] and t_inject <= x.sent < t_restore]
        if rollback:
            last_old = max((x.recv for x in mine if not pred(x)), default=t_inject)
            hit = first_after(mine, row["instance"], last_old, pred)
        else:
            hit = first_after(mine, row["instance"], t_inject, pred)
        assert hit is not None, (row, mine[:5])
        theirs = (hit.recv - t_inject) * 1000
        slack = 1000 / report["rate"] + 1000 / 50 + 150
        assert abs(theirs - row[measure]) <= slack, (row["instance"], theirs, row[measure])
