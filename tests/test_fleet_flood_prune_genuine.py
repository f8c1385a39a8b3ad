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
from gateway.state.signing import Key
from tests.conftest import RedisServer
from tests.staterig import store_on, two_stores
from tests.test_fleet_flood_bounded import flood

#: another fleet's key
OTHER = Key.of(b"another fleet key, not ours" * 2)

pytestmark = pytest.mark.timeout(60)


async def test_a_flood_prunes_forgeries_but_not_another_keys_heartbeat(
        redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgprune2") as pair:
        a = pair.a
        other = store_on(redis_server, "kgprune2", current=OTHER)
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
        other = store_on(redis_server, "kgprune3", current=OTHER)
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


async def test_another_keys_counts_under_a_name_no_instance_has_are_not_kept(
        redis_server: RedisServer) -> None:
    """Found by review revmerge37: another key's counts were kept whatever their field,
    and each reader held the field in memory (MAX_KEPT per counts hash): a forger naming a
    made-up key id under megabyte-long names made every instance, every worker, hold as
    much as the store did. A field longer than any instance's name is removed as before."""
    from gateway.state.keptcounts import MAX_FIELD

    async with two_stores(redis_server, "kgprune4") as pair:
        other = store_on(redis_server, "kgprune4", current=OTHER)
        await other.open()
        try:
            key, long = "kgprune4:stats:iris", "p" * (MAX_FIELD + 1)
            await other.put_stats("iris", "w", {"requests": 5})
            await other.put_stats("iris", long, {"requests": 5})
            assert await pair.a.get_stats("iris") == []
            assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", key, long) == "0"
            assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", key, "w") == "1"
            assert all(len(f) <= MAX_FIELD
                       for k in (pair.a._stats_kept or {}).values() for f in k._seen)
        finally:
            await other.close()


async def test_another_keys_kept_counts_keep_their_place_when_forgeries_fill_the_bound(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop 40's review (impleft9 item 2) asked whether a forger who fills the bound
    (MAX_KEPT per hash) with entries naming made-up key ids pushes out the genuine entries
    of another key kept already. It does not: a kept entry rewritten at its instance's next
    tick gives up its place and takes it back in the same step (KeptCounts.still, then
    keep). What such a flood does is refuse a NEW entry of another key while the bound is
    full (removed and counted, as any refused count): no bound can tell it from a forgery
    (its MAC is under a key we do not hold), and it is no more than the forger can do with
    HDEL on the same hash (README, "delete ... other instances' analysis counts"). A guard
    of both. The bound lowered to 8 so the flood is small."""
    from gateway.state import keptcounts

    monkeypatch.setattr(keptcounts, "MAX_KEPT", 8)
    async with two_stores(redis_server, "kgprune5") as pair:
        a = pair.a
        other = store_on(redis_server, "kgprune5", current=OTHER)
        await other.open()
        try:
            key = "kgprune5:stats:iris"
            await other.put_stats("iris", "w", {"requests": 5})
            assert await a.get_stats("iris") == []  # (w kept: one place of 8)
            await asyncio.to_thread(flood, redis_server, key, "KGS1 deadbeef 00\n{}", 10)
            assert await a.get_stats("iris") == []  # (7 forgeries kept, 3 removed)
            assert len(a._stats_kept["iris"]._seen) == 8  # type: ignore[index]
            for n in (6, 7, 8):  # (its instance's next ticks)
                await other.put_stats("iris", "w", {"requests": n})
                assert await a.get_stats("iris") == []
                assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", key, "w") == "1"
                assert [s["requests"] for s in await other.get_stats("iris")] == [n]
            await other.put_stats("iris", "v", {"requests": 1})  # (new, the bound full)
            await a.get_stats("iris")
            assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", key, "v") == "0"
        finally:
            await other.close()
