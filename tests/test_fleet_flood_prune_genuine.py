"""A flooded heartbeats hash's pruning never removes what a genuine instance may have
written (found by review revmerge35: the fleet read pruned every heartbeat it refused
once the hash was past SCAN_BUDGET, one signed with a key id this instance does not hold
too: an instance with another key, mid-rotation or a wrong-key pod, had its heartbeat
deleted at each read, vanished from every other view between two of its beats, and the
fleet's KEY UNCONFIRMED / `retired` signals lost what they are judged by). Real redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.state.fleetscan import SCAN_BUDGET
from gateway.state.redis import RedisStore
from gateway.state.signing import Key, Keyring
from tests.conftest import RedisServer
from tests.staterig import two_stores
from tests.test_fleet_flood_bounded import flood

pytestmark = pytest.mark.timeout(60)


async def test_a_flood_prunes_forgeries_but_not_another_keys_heartbeat(
        redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgprune2") as pair:
        a = pair.a
        other = RedisStore(redis_server.url, "kgprune2", 1.0,
                           keys=Keyring(Key.of(b"another fleet key, not ours" * 2)))
        await other.open()
        try:
            await other.heartbeat("w", 1, "sha256:x")
            ms = int(time.time() * 1000)
            await asyncio.to_thread(flood, redis_server, "kgprune2:instances",
                                    f"{ms} - - 1 1 -", SCAN_BUDGET + 50)
            for _ in range(6):  # (the cursor passes every entry, "w" too)
                await a.fleet(5.0)
            left = int(await asyncio.to_thread(redis_server.cmd, "HLEN",
                                               "kgprune2:instances"))
            assert left <= SCAN_BUDGET, left  # (the forgeries drained)
            assert await asyncio.to_thread(redis_server.cmd, "HEXISTS",
                                           "kgprune2:instances", "w") == "1"
            assert a.other_key_at is not None  # (its key seen: KEY UNCONFIRMED)
        finally:
            await other.close()
