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


async def test_another_keys_counts_are_counted_once_kept_and_aged_out(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for an instance's analysis counts (found by review improt2; a4ce265 kept
    them and was reverted: refused and reported again at every tick, for good): a flooded
    counts hash drains of its forgeries, but the counts of an instance holding another key
    (a wrong-key pod: the evidence of it; mid-rotation: its holder's canary analysis) are
    refused once, left in the store, not judged again while unchanged, and removed once
    unchanged for KEPT_FOR (a left-over, never rewritten)."""
    from gateway.state import keptcounts

    async with two_stores(redis_server, "kgprune3") as pair:
        a = pair.a
        other = RedisStore(redis_server.url, "kgprune3", 1.0,
                           keys=Keyring(Key.of(b"another fleet key, not ours" * 2)))
        await other.open()
        try:
            key = "kgprune3:stats:iris"
            await other.put_stats("iris", "w", {"requests": 5})
            await asyncio.to_thread(flood, redis_server, key, "not sealed", SCAN_BUDGET + 50)
            for _ in range(6):  # (the cursor passes every entry, "w" too)
                assert await a.get_stats("iris") == []
            left = int(await asyncio.to_thread(redis_server.cmd, "HLEN", key))
            assert left <= SCAN_BUDGET, left  # (the forgeries drained)
            assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", key, "w") == "1"
            for _ in range(3):
                await a.get_stats("iris")
            of_w = [r for r in pair.refused if "unknown key id" in r]
            assert len(of_w) == 1, of_w  # (counted once, not at every read)
            assert await other.get_stats("iris") != []  # (its holder still reads it)
            monkeypatch.setattr(keptcounts, "KEPT_FOR", 0.2)
            deadline = time.monotonic() + 3
            while await asyncio.to_thread(redis_server.cmd, "HEXISTS", key, "w") == "1":
                assert time.monotonic() < deadline, "another key's left-over never removed"
                await a.get_stats("iris")
        finally:
            await other.close()
