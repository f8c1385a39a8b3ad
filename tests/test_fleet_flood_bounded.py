"""A flooded heartbeats hash costs each fleet read a bounded time (found this morning:
redisaux.fleet read and verified the whole `<p>:instances` hash at every /v1/status, sync
and receipt; with 200,000 forged entries each read cost seconds, again and again). A read
now takes the instances it knows by name, then SCAN_BUDGET entries more (fleetscan.py),
and removes the refused ones it read: genuine instances are listed at every read, one that
started during the flood too, and the flood drains as it is read. Real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from gateway.state.fleetscan import SCAN_BUDGET
from tests.conftest import RedisServer
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(60)

N = 200_000


def flood(redis: RedisServer, key: str, value: str, n: int = N) -> None:
    fill = (f"local a = {{}} for i=1,{n} do a[#a+1] = 'i'..i; a[#a+1] = ARGV[1]..' i'..i "
            "if #a == 2000 or i == " + str(n) + " then redis.call('HSET', KEYS[1], unpack(a)) "
            "a = {} end end return 1")
    subprocess.run(["redis-cli", "-p", str(redis.port), "EVAL", fill, "1", key, value],
                   check=True, capture_output=True)


async def test_a_flooded_heartbeats_hash_costs_each_read_a_bounded_time(
        redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgflood") as pair:
        a, b, refused = pair.a, pair.b, pair.refused
        await a.heartbeat("a", 1, "sha256:x")
        assert set(await a.fleet(5.0)) == {"a"}  # (a knows itself: listed last)
        ms = int(time.time() * 1000)
        await asyncio.to_thread(flood, redis_server, "kgflood:instances", f"{ms} - - 1 1 -")
        # b starts during the flood: a has never listed it, its heartbeat is somewhere
        # among the forgeries; a heard it pushed, and reads it by name
        await a.heartbeat("a", 1, "sha256:x")
        await b.heartbeat("b", 1, "sha256:x")
        worst, reads, found_b, took = 0.0, 0, None, []
        while True:
            t0 = time.perf_counter()
            got = await a.fleet(5.0)
            took.append(time.perf_counter() - t0)
            worst = max(worst, took[-1])
            reads += 1
            assert "a" in got  # (never hidden by the flood)
            if "b" in got and found_b is None:
                found_b = reads
            if found_b is None:
                assert reads < 20, "b not listed: its push was not heard?"
                await asyncio.sleep(0.01)
            if found_b is not None and a.flooded == 0:
                break
            assert reads < 2 * N // SCAN_BUDGET, (reads, a.flooded)
            assert found_b is None or "b" in got  # (listed at every read once listed)
            await a.heartbeat("a", 1, "sha256:x")  # (their leases)
            await b.heartbeat("b", 1, "sha256:x")
        print(f"worst read {worst * 1000:.0f} ms, median {sorted(took)[reads // 2] * 1000:.0f}"
              f" ms over {reads} reads; b listed at read {found_b}")
        # each read examines SCAN_BUDGET of the 200,000 (worst 356 ms, at load; before,
        # the whole hash read in one go took 4.5 s, at every read): bounded, whatever the
        # flood's size
        assert worst < 1.0, worst
        assert len(refused) == N, len(refused)  # (each forgery counted once)
        # drained to under the budget (the rest, read whole again, is refused once, as
        # before): the forgeries read were removed, the genuine heartbeats kept
        left = await asyncio.to_thread(redis_server.cmd, "HLEN", "kgflood:instances")
        assert int(left) <= SCAN_BUDGET, left
        assert set(await a.fleet(5.0)) == {"a", "b"}
        assert len(refused) == N


async def test_a_refused_value_written_again_during_the_read_is_left(
        redis_server: RedisServer) -> None:
    """Only a value still as refused is removed: one written since (a genuine heartbeat
    landing on a forged entry's name) is kept for its own judgement."""
    async with two_stores(redis_server, "kgprune") as pair:
        a, b = pair.a, pair.b
        await b.heartbeat("b", 1, "sha256:x")
        ms = int(time.time() * 1000)
        await asyncio.to_thread(flood, redis_server, "kgprune:instances", f"{ms} - - 1 1 -",
                                SCAN_BUDGET + 10)
        from gateway.state.fleetscan import PRUNE
        raw = await asyncio.to_thread(redis_server.cmd, "HGET", "kgprune:instances", "i1")
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgprune:instances", "i1", "new")
        await a._script(PRUNE, ["kgprune:instances"], [b"i1", raw.encode(), b"i2",
                                                        b"not what is stored"])
        assert await asyncio.to_thread(redis_server.cmd, "HGET", "kgprune:instances",
                                       "i1") == "new"
        assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", "kgprune:instances",
                                       "i2") == "1"
