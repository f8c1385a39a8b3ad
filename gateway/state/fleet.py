"""The fleet as this instance sees it: heartbeats out, acks in, propagation receipts.

Owns this instance's heartbeat (its signed ack of the generation it enforces), the acks
heard from the others (only verified ones reach it: gateway/state/redisaux.py), who is
live, and `receipt`: wait until every live instance has acked a generation. A receipt
counts an instance as acked only on its own signed word, and always counts this one for
what it holds. Talks to a `FleetStore` only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.config import StateConfig
from gateway.errors import StateError
from gateway.state.holder import Holder
from gateway.state.store import Ack, FleetStore

__all__ = ["Fleet"]


class Fleet:
    def __init__(self, store: FleetStore, holder: Holder, cfg: StateConfig,
                 instance: str, pushes: bool) -> None:
        self.store = store
        self.holder = holder
        self.cfg = cfg
        self.instance = instance
        self.pushes = pushes  # acks arrive as pushes (redis pub/sub)
        self.acks: dict[str, int] = {}
        self.heard: dict[str, float] = {}  # instance -> when we last heard of it (monotonic)
        #: since when our push channel has been open (None: not watching)
        self.watching_since: float | None = None
        self.last_beat = 0.0
        #: where this instance listens ("data", "admin"), published with its heartbeat so
        #: that a drill can reach every instance
        self.urls: dict[str, str] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._beating = asyncio.Lock()

    async def beat(self) -> None:
        """Heartbeat: announce the generation we enforce (and count our own ack)."""
        async with self._beating:  # (the generation read in turn: never sent out of order)
            gen = self.holder.doc.generation
            await self.store.heartbeat(self.instance, gen, self.holder.loaded.digest,
                                       self.urls or None)
        self.last_beat = time.monotonic()
        self.note(Ack(self.instance, gen))

    def due(self) -> bool:
        return time.monotonic() - self.last_beat >= self.cfg.heartbeat_interval

    def note(self, ack: Ack) -> None:
        """A (verified) ack: the instance enforces at least that generation."""
        self.heard[ack.instance] = time.monotonic()
        if ack.generation > self.acks.get(ack.instance, -1):
            self.acks[ack.instance] = ack.generation
        for f in self._waiters:
            if not f.done():
                f.set_result(None)

    async def receipt(self, generation: int, wait: float) -> dict[str, Any]:
        """Wait until every live instance has applied `generation` (or `wait` runs out)."""
        t0 = time.monotonic()
        poll = 0.05 if self.pushes else 0.005
        live = await self.live()
        pending = {i for i in live if self.acks.get(i, -1) < generation}
        last, confirmed = t0, False
        while pending:
            left = t0 + wait - time.monotonic()
            if left <= 0:
                break
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(fut)
            try:
                pending = {i for i in pending if self.acks.get(i, -1) < generation}
                if pending:
                    await asyncio.wait_for(fut, min(left, poll))
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(fut)
            if time.monotonic() - last >= poll:
                last = time.monotonic()
                # once, if still waiting: ask the store who is live. An instance that left
                # (its heartbeat removed) is still heard of until its lease runs out; it
                # was waited for and answered `pending` by every write meanwhile
                if not confirmed:
                    confirmed = True
                    gone = await self._left(pending)
                    live = {i: g for i, g in live.items() if i not in gone}
                    pending -= gone
                await self.live()
            pending = {i for i in pending if self.acks.get(i, -1) < generation}
        return {"generation": generation, "applied": {
            "instances": len(live), "acked": len(live) - len(pending),
            "elapsed_ms": round((time.monotonic() - t0) * 1000, 2), "pending": sorted(pending)}}

    async def _left(self, pending: set[str]) -> set[str]:
        """Of `pending`, the instances the store no longer holds a live heartbeat of (they
        left, or their lease ran out), forgotten; none when the store cannot say."""
        if not (self.pushes and pending):
            return set()  # (without pushes, `live` asks the store every time)
        try:
            registered = await self.store.live_instances(self.cfg.instance_lease)
        except StateError:
            return set()
        gone = {i for i in pending if i not in registered and i != self.instance}
        for i in gone:
            self.heard.pop(i, None)
        return gone

    async def live(self) -> dict[str, int]:
        """Live instances → the newest generation each acked (never more than it signed)."""
        lease = self.cfg.instance_lease
        now = time.monotonic()
        self._forget(now - lease)
        heard = (self.pushes and self.watching_since is not None
                 and now - self.watching_since > 2 * self.cfg.heartbeat_interval)
        if heard:
            # Every instance's heartbeat reaches us on the acks channel: we know who is live
            # without asking (one round trip less on every write).
            live = {i: self.acks.get(i, 0) for i, t in self.heard.items() if now - t <= lease}
        else:
            try:
                live = await self.store.live_instances(lease)
            except StateError:
                live = {}
        # We enforce what we hold, whatever our last heartbeat told the store.
        live[self.instance] = max(live.get(self.instance, 0), self.holder.doc.generation)
        for inst, gen in live.items():
            # (what we heard is no news: noting it again would keep a dead instance heard
            # of for as long as writes come less than a lease apart)
            if not heard or inst == self.instance:
                self.note(Ack(inst, gen))
        return live

    def _forget(self, before: float) -> None:
        """Drop what we keep of instances not heard of since `before` (a lease ago): dead
        to receipts already, and with every restart a new pod name, kept for the life of
        the process they grew without bound and every receipt walked them all."""
        gone = [i for i, t in self.heard.items() if t < before and i != self.instance]
        for i in gone:
            del self.heard[i]
            self.acks.pop(i, None)

    async def members(self) -> dict[str, dict[str, Any]]:
        """Every live instance with the generation and config digest it runs."""
        try:
            return await self.store.fleet(self.cfg.instance_lease)
        except StateError:
            return {}
