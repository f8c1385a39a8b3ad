"""The live instances' addresses, and the names heard pushed, for the redis fleet read.

Owns `FleetUrls` (a base of redisaux.RedisRecords): the addresses (`<p>:instances:urls`)
of the instances a fleet read found live, read by name, and orphans (addresses with no
heartbeat: only a forgery) removed from a bounded step of that hash (fleetscan.py: read
whole at every read, a flooded urls hash cost as much as a flooded heartbeats hash); and
the instances whose verified heartbeat came on the acks channel since the last read, which
the next reads by name (one that started during a flood is listed at once, not when the
bounded steps reach it).
"""

from __future__ import annotations

import contextlib
from typing import Any

from gateway.errors import StateError
from gateway.state.beatorder import MAX_INSTANCES
from gateway.state.fleetscan import ORPHANS, SCAN_BUDGET, URLS
from gateway.state.redisbeats import RedisBeats

__all__ = ["FleetUrls"]


class FleetUrls(RedisBeats):
    #: where the next step of the urls hash starts (HSCAN's cursor)
    _urls_at = "0"
    #: the instances whose verified heartbeat was pushed since the last fleet read
    _heard: set[str] | None = None

    def _hear(self, instance: str) -> None:
        """A verified heartbeat of `instance` was pushed (not over MAX_INSTANCES names)."""
        if self._heard is None:
            self._heard = set()
        if len(self._heard) < MAX_INSTANCES:
            self._heard.add(instance)

    async def _urls(self, out: dict[str, dict[str, Any]], seen: set[bytes]) -> None:
        """Add the live instances' addresses to `out`, read by name; and remove, from a
        bounded step of the urls hash, the addresses of instances with no heartbeat."""
        names = sorted(out)
        keys = [self.k_instances, self.k_instances + ":urls"]
        cursor, got, fields = await self._script(
            URLS, keys, [str(SCAN_BUDGET), self._urls_at, *names])
        self._urls_at = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        flat: list[bytes] = []
        for name, raw in zip(names, got, strict=True):
            if raw is not None:
                flat += (name.encode(), raw)
        await self._read_urls(flat, out)
        orphans: list[str | bytes] = [f for f in fields if f not in seen]
        if orphans:  # (a cleanup: the read stands whether it succeeds or not)
            with contextlib.suppress(StateError):
                await self._script(ORPHANS, keys, orphans)
