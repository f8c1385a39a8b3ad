"""Replayed heartbeats on a real redis-server (state/redisbeats.py, state/beatorder.py): a
genuine signed heartbeat written back by raw redis commands with a fresh arrival stamp.
Judged by this instance's clock when it is far behind the store's, such a replay up to
that far older was taken as live; what was read before bounds it by the store's clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.state.beatorder import NewestBeats
from tests.conftest import RedisServer, wait_until
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(20)


def _store_ms(redis: RedisServer) -> int:
    """The store's TIME (ms), as the heartbeat script stamps it."""
    parts = [p for p in redis.cmd("TIME").split("\r\n") if p.isdigit()]
    return int(parts[0]) * 1000 + int(parts[1]) // 1000


async def test_a_replay_older_than_a_heartbeat_read_is_refused_with_our_clock_behind(
        redis_server: RedisServer) -> None:
    """This instance's clock is an hour behind the store's (and b's): heartbeats are judged
    by our clock, so b's heartbeat signed 1000 s ago, written back raw with a fresh
    stamp, read as live (b "at" the generation it had then). It is refused: we read one of
    b's signed 1000 s later. b's next genuine heartbeat is live again."""
    async with two_stores(redis_server, "kgreplay") as pair:
        a, b, seen = pair.a, pair.b, pair.refused
        a.clock = lambda: time.time() - 3600  # type: ignore[method-assign]
        b.clock = lambda: time.time() - 1000  # type: ignore[method-assign]
        await b.heartbeat("b", 1, "sha256:x")
        raw = await asyncio.to_thread(redis_server.cmd, "HGET", "kgreplay:instances", "b")
        old = raw.partition(" ")[2]
        b.clock = time.time  # type: ignore[method-assign]
        await b.heartbeat("b", 2, "sha256:x")
        assert (await a.fleet(5.0))["b"]["generation"] == 2
        assert seen == []
        # the replay, by raw commands: the old signed record, stamped now by the store
        stamped = f"{await asyncio.to_thread(_store_ms, redis_server)} {old}"
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgreplay:instances", "b", stamped)
        fleet = await a.fleet(5.0)
        assert "b" not in fleet, fleet
        assert any("'b'" in w and "replay" in w and "store's clock" in w for w in seen), seen
        # (removed as the clock check's replays are) and the genuine one after it is live
        assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", "kgreplay:instances",
                                       "b") == "0"
        await b.heartbeat("b", 3, "sha256:x")
        assert (await a.fleet(5.0))["b"]["generation"] == 3


def test_the_same_heartbeat_read_again_ages_by_the_store_clock_and_names_are_bounded() -> None:
    """The newest heartbeat itself, stamped afresh long after it was first read, is at
    least that old; a newer one is unbounded here; the oldest instances are forgotten."""
    beats = NewestBeats(limit=2)
    assert beats.min_age_ms("a", 5_000, 10_000) is None
    beats.saw("a", 5_000, 10_000)
    assert beats.min_age_ms("a", 5_000, 10_000) == 0
    assert beats.min_age_ms("a", 5_000, 400_000) == 390_000
    assert beats.min_age_ms("a", 4_000, 10_500) == 1_500
    assert beats.min_age_ms("a", 6_000, 10_000) is None
    beats.saw("a", 4_000, 11_000)  # (older: the newest stays)
    assert beats.seen["a"] == (5_000, 10_000)
    beats.saw("b", 1, 12_000)
    beats.saw("c", 1, 13_000)
    assert set(beats.seen) == {"b", "c"}


async def test_an_instance_whose_clock_was_ahead_is_live_again_once_it_is_set_right(
        redis_server: RedisServer) -> None:
    """b's clock is an hour ahead (its heartbeats are taken: nothing refuses a future
    signed time), then NTP steps it back. Its genuine heartbeats, signed earlier than the
    one read an hour "ahead", were refused as replays for that hour and deleted from the
    store at every read (b gone from the fleet, receipts short, drills failing): the newest
    read is remembered no later than the store's clock plus the skew tolerated."""
    async with two_stores(redis_server, "kgahead") as pair:
        a, b, seen = pair.a, pair.b, pair.refused
        b.clock = lambda: time.time() + 3600  # type: ignore[method-assign]
        await b.heartbeat("b", 1, "sha256:x")
        assert (await a.fleet(5.0))["b"]["generation"] == 1
        b.clock = time.time  # type: ignore[method-assign]
        await b.heartbeat("b", 2, "sha256:x")
        fleet = await a.fleet(5.0)
        assert fleet.get("b", {}).get("generation") == 2, (fleet, seen)
        assert seen == []


async def test_a_heartbeat_written_again_after_it_was_read_is_refused(
        redis_server: RedisServer) -> None:
    """b's newest heartbeat, read once, then written back raw with a fresh stamp (after b
    left: its drill URL and its place in /v1/fleet and a drill's started_with) is refused
    at once, not only once it is 10 leases and 5 minutes old; read again unchanged, the
    genuine one stays live."""
    async with two_stores(redis_server, "kgagain") as pair:
        a, b, seen = pair.a, pair.b, pair.refused
        await b.heartbeat("b", 1, "sha256:x")
        assert "b" in await a.fleet(5.0)
        assert "b" in await a.fleet(5.0) and seen == []  # (the same write, read again)
        raw = await asyncio.to_thread(redis_server.cmd, "HGET", "kgagain:instances", "b")
        await b.leave("b")
        assert "b" not in await a.fleet(5.0)
        await wait_until(lambda: _store_ms(redis_server) > int(raw.partition(" ")[0]), 2,
                         what="the store's clock to move on")
        stamped = f"{await asyncio.to_thread(_store_ms, redis_server)} {raw.partition(' ')[2]}"
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgagain:instances", "b", stamped)
        fleet = await a.fleet(5.0)
        assert "b" not in fleet, fleet
        assert any("'b' written again" in w and "replay" in w for w in seen), seen
        await b.heartbeat("b", 2, "sha256:x")
        assert (await a.fleet(5.0))["b"]["generation"] == 2

