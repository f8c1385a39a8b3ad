"""Live per-version traffic for the operator console, for the whole fleet.

Owns this process's recent counts of every route (an observer the data plane tells how
each exchange with a backend went, the "ok" ones a batch at a time through
`wiring.dataplane.Outcomes`: one bucket ring per route and version), their
publication to the state store every `step` seconds (one small blob per instance under a
stats key no route can have), and the fleet view: every instance's published blob, this
instance's own counts taken fresh, merged by `gateway.domain.traffic`; a view also removes
the blobs of instances gone for three windows. A store that cannot be read leaves this
instance's counts alone in the view, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.domain import traffic
from gateway.domain.stats import WindowStats
from gateway.errors import StateError
from gateway.log import event
from gateway.tasks import cancel

__all__ = ["STATS_KEY", "LiveTraffic"]

log = logging.getLogger("killgate.traffic")
STATS_KEY = "console:traffic"  # route names cannot hold ':', so no route's stats are here
VIEW_TTL = 1.0  # seconds a view is served again to every console that asks
GONE_AFTER = 3  # windows: a blob that old is a gone instance's leftover, removed by a view


class StatsStore(Protocol):
    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None: ...

    async def get_stats(self, route: str) -> list[dict[str, Any]]: ...

    async def drop_stats(self, route: str, instances: list[str]) -> None: ...


class LiveTraffic:
    def __init__(self, store: StatsStore, instance: str, step: int = 5, window: int = 300,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.instance = instance
        self.step = step
        self.window = window
        self.clock = clock
        self.stats = WindowStats(keep_seconds=window + 2 * step, bucket_s=step)
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        # decoding is most of a view's cost: each instance's blob is decoded once (it
        # changes every `step`), and a view serves every console asking within a second
        self._decoded: dict[tuple[str, float], traffic.Blob] = {}
        self._view: tuple[float, dict[str, Any]] | None = None
        # hands over the outcomes a fan-out holds back (Outcomes.flush): before every read
        self._held: Callable[[], None] = _nothing

    # ------------------------------------------------------------------ Observer

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        self.stats.record(route, version, kind != "ok", latency, self.clock())

    def served(self, batch: Mapping[tuple[str, str], list[float]], now: float) -> None:
        """"ok" exchanges of one second, a batch at a time (`wiring.dataplane.Outcomes`)."""
        record = self.stats.record_ok
        for (route, version), latencies in batch.items():
            record(route, version, latencies, now)

    def batched_by(self, flush: Callable[[], None]) -> None:
        self._held = flush

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="live-traffic")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def _blob(self) -> dict[str, Any]:
        self._held()
        now = self.clock()
        return traffic.encode(self.instance, now, self.step,
                              self.stats.buckets(self.window + self.step, now))

    async def publish(self) -> bool:
        """Put this instance's counts in the store (a side channel: failures are logged
        once per outage, never raised)."""
        try:
            await self.store.put_stats(STATS_KEY, self.instance, self._blob())
        except StateError as exc:
            self._failures += 1
            if self._failures == 1:
                event(log, "traffic_publish_failed", logging.WARNING, error=str(exc))
            return False
        self._failures = 0
        return True

    async def _loop(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.step)

    # ------------------------------------------------------------------ the fleet's view

    async def view(self) -> dict[str, Any]:
        """Chart series of the fleet's last `window` seconds, per route and version."""
        now = self.clock()
        if self._view is not None and 0 <= now - self._view[0] < VIEW_TTL:
            return self._view[1]
        # our own counts are read here, on the loop that writes them; the rest (decoding
        # and summing thousands of points for a large fleet) runs in a thread, so the data
        # plane on this loop is never held up for its whole length
        self._held()
        mine = self.stats.buckets(self.window + self.step, now)
        error = None
        try:
            raw = await self.store.get_stats(STATS_KEY)
        except StateError as exc:
            raw, error = [], str(exc)
        out = await asyncio.to_thread(self._merge, now, mine, raw)
        out["scope"], out["store_error"] = ("fleet" if error is None else "instance"), error
        self._view = (now, out)
        gone = out.pop("gone")
        if gone:  # instances that went without a word (restarted pods): their leftovers
            try:
                await self.store.drop_stats(STATS_KEY, gone)
            except StateError as exc:
                event(log, "traffic_prune_failed", logging.WARNING, error=str(exc))
        return out

    def _merge(self, now: float, mine: traffic.Buckets, raw: list[Any]) -> dict[str, Any]:
        blobs = [traffic.local(self.instance, now, mine)]
        dropped = 0
        decoded: dict[tuple[str, float], traffic.Blob] = {}
        for item in raw:
            key = _identity(item)
            b = self._decoded.get(key) if key is not None else None
            if b is None:
                b = traffic.decode(item, self.step)
            if b is None:
                dropped += 1
                continue
            decoded[(b.instance, b.t)] = b
            if b.instance != self.instance and now - b.t < self.window + self.step:
                blobs.append(b)
        self._decoded = decoded  # (what is no longer in the store is forgotten)
        # an instance silent for more than a few steps is gone (or cut off): its buckets
        # up to its last blob still count, but it no longer holds the chart's end back
        live = [b for b in blobs if now - b.t <= 3 * self.step]
        live_ids = {id(b) for b in live}
        out = traffic.merge(blobs, min(b.t for b in live), self.window, self.step)
        out.update(instance=self.instance, instances=sorted(b.instance for b in live),
                   silent=sorted(b.instance for b in blobs if id(b) not in live_ids),
                   dropped_blobs=dropped,
                   gone=sorted(b.instance for b in decoded.values() if b.instance != self.instance
                               and now - b.t > GONE_AFTER * self.window))
        return out


def _nothing() -> None:
    return None


def _identity(blob: Any) -> tuple[str, float] | None:
    """Which instance's blob of when: the key its decoding is kept under."""
    if not isinstance(blob, dict):
        return None
    inst, t = blob.get("instance"), blob.get("t")
    if isinstance(inst, str) and isinstance(t, int | float) and not isinstance(t, bool):
        return inst, float(t)
    return None
