"""A flooded analysis counts hash costs each read a bounded time (found by review after
the heartbeats' fix: redisstats.get_stats read the whole `<p>:stats:<route>` hash, HGETALL,
and verified every entry at every analysis tick; an attacker refilling it with 200,000
forgeries made every instance pay a reply of megabytes and 200,000 MACs, again and again).
A read now takes the instances it knows by name, then SCAN_BUDGET entries more, and
removes the refused ones it read while still as refused: every genuine instance's counts
are in every read once met, the sums exact, and the flood drains. Real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.state.fleetscan import SCAN_BUDGET
from gateway.state.redisstats import STATS
from tests.conftest import RedisServer
from tests.staterig import two_stores
from tests.test_fleet_flood_bounded import N, flood

pytestmark = pytest.mark.timeout(60)


async def test_a_flooded_counts_hash_costs_each_read_a_bounded_time(
        redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgsflood") as pair:
        a, b, refused = pair.a, pair.b, pair.refused
        blob_a, blob_b = {"instance": "a", "n": 7}, {"instance": "b", "n": 35}
        await a.put_stats("iris", "a", blob_a)
        assert await a.get_stats("iris") == [blob_a]
        await asyncio.to_thread(flood, redis_server, "kgsflood:stats:iris", "forged")
        # b writes during the flood: a has never read it, and b sent no heartbeat (not
        # listed): its counts are somewhere among the forgeries, met by the scan in turn
        await b.put_stats("iris", "b", blob_b)
        worst, reads, found_b, took = 0.0, 0, None, []
        while True:
            t0 = time.perf_counter()
            got = await a.get_stats("iris")
            took.append(time.perf_counter() - t0)
            worst = max(worst, took[-1])
            reads += 1
            # (each read examines SCAN_BUDGET of the 200,000: bounded, whatever the flood's
            # size; before, the whole hash read in one go took 2.3 s, at every refill)
            assert took[-1] < 1.0, (reads, took[-1])
            assert blob_a in got  # (ours: never hidden by the flood)
            if blob_b in got and found_b is None:
                found_b = reads
            assert found_b is None or sorted(got, key=str) == sorted([blob_a, blob_b], key=str)
            flooded = (a.stats_flooded or {}).get("iris", 0)
            assert (flooded > 0) == (reads < N // SCAN_BUDGET) or reads > 10, (reads, flooded)
            if found_b is not None and not flooded:
                break
            assert reads < 2 * N // SCAN_BUDGET, (reads, flooded)
        print(f"worst read {worst * 1000:.0f} ms, median {sorted(took)[reads // 2] * 1000:.0f}"
              f" ms over {reads} reads; b met at read {found_b}")
        # drained: the forgeries read were removed (each counted once), the genuine kept
        left = await asyncio.to_thread(redis_server.cmd, "HLEN", "kgsflood:stats:iris")
        assert int(left) <= SCAN_BUDGET, left
        assert sorted(await a.get_stats("iris"), key=str) == sorted([blob_a, blob_b], key=str)
        assert len(refused) == N, len(refused)
        assert not a.stats_flooded
        assert int(await asyncio.to_thread(redis_server.cmd, "HLEN",
                                           "kgsflood:stats:iris")) == 2


async def test_a_refused_count_written_again_since_is_left(redis_server: RedisServer) -> None:
    """Only a value still as refused is removed: counts written on a forged entry's name
    between the read and the removal (its instance's next tick) are kept."""
    async with two_stores(redis_server, "kgsprune") as pair:
        a, b = pair.a, pair.b
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgsprune:stats:iris", "b", "forged")
        orig = a._script

        async def write_between(script, keys, args):  # (b's tick lands just then)
            if script is not STATS:  # (the removal)
                await b.put_stats("iris", "b", {"n": 1})
            return await orig(script, keys, args)

        a._script = write_between  # type: ignore[method-assign]
        assert await a.get_stats("iris") == []
        a._script = orig  # type: ignore[method-assign]
        assert await a.get_stats("iris") == [{"n": 1}]
