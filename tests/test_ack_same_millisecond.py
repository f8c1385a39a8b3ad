"""Two genuine acks of one instance signed in the same millisecond (a kill applied right
after another: the instance heartbeats each generation as it applies it, and a local
redis answers in well under a millisecond) are not a replay of each other (found by
review of impacks): the second, for the later generation, was refused as "signed no
later than an ack of it", so the receipt of the second kill waited for that instance
(or said it short) until its next periodic heartbeat. A replay is the same record: the
same millisecond for no later generation stays refused, pushed or stored. Real
redis-server, two stores, real signed acks."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.state.beatorder import NewestBeats, pushed_replay
from tests.conftest import RedisServer, wait_until
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(20)


async def test_two_acks_signed_in_one_millisecond_are_both_heard(
        redis_server: RedisServer) -> None:
    from gateway.state.store import Ack

    async with two_stores(redis_server, "kgms", listen=True) as pair:
        a, b, got, refused = pair.a, pair.b, pair.got, pair.refused
        now = time.time()
        b.clock = lambda: now  # type: ignore[method-assign]  # (one millisecond for both)
        await b.heartbeat("b", 1, "sha256:x")
        first = (await asyncio.to_thread(redis_server.cmd, "HGET", "kgms:instances",
                                         "b")).partition(" ")[2]
        await b.heartbeat("b", 2, "sha256:x")
        await wait_until(lambda: Ack("b", 2, "sha256:x") in got or refused, 3,
                         what="the second ack to be judged")
        assert got == [Ack("b", 1, "sha256:x"), Ack("b", 2, "sha256:x")], (got, refused)
        assert refused == []
        live = await a.fleet(5.0)  # (the stored heartbeat: generation 2, taken)
        assert live["b"]["generation"] == 2, live
        # the first, PUBLISHed again: the same millisecond, an earlier generation: a replay
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgms:acks", first)
        await wait_until(lambda: refused, 3, what="the replay to be judged")
        assert refused[0].startswith("ack: 'b' signed no later than an ack of it"), refused
        assert got[-1] == Ack("b", 2, "sha256:x")


async def test_heartbeats_sent_at_once_are_not_taken_for_replays(
        redis_server: RedisServer) -> None:
    """Found in a CI run (a console test saw "1 store value(s) refused"): an instance
    acks each generation it applies, so a kill and its unkill made within a few
    milliseconds sent two heartbeats at once; in one millisecond for one generation (or
    reordered over two pooled connections), every other instance refused one as a
    replay and counted a forgery nobody made. They go out in turn, each signed after the
    one before."""
    from gateway.state.store import Ack

    async with two_stores(redis_server, "kgat", listen=True) as pair:
        a, b, got, refused = pair.a, pair.b, pair.got, pair.refused
        now = time.time()
        b.clock = lambda: now  # type: ignore[method-assign]  # (one millisecond for all)
        await asyncio.gather(*(b.heartbeat("b", 3, f"sha256:{i % 2}") for i in range(6)))
        await wait_until(lambda: len(got) + len(refused) >= 6, 3, what="six acks judged")
        assert refused == [] and len(got) == 6, (got, refused)
        assert got[-1] == Ack("b", 3, "sha256:1")
        live = await a.fleet(5.0)
        assert live["b"]["generation"] == 3, live
        assert refused == []


def test_the_same_millisecond_orders_by_generation() -> None:
    beats = NewestBeats()
    assert pushed_replay(beats, "b", 5_000, 100, 0.0, None, 300.0, 1) is None
    assert pushed_replay(beats, "b", 5_000, 101, 0.0, None, 300.0, 2) is None
    assert beats.seen["b"] == (5_000, 100) and beats.applied["b"] == 2
    assert "no later than" in str(pushed_replay(beats, "b", 5_000, 102, 0.0, None, 300.0, 2))
    assert "no later than" in str(pushed_replay(beats, "b", 5_000, 102, 0.0, None, 300.0, 1))
    assert beats.written_since("b", 5_000, 200, 2) and not beats.written_since("b", 5_000, 200, 3)
    assert beats.min_age_ms("b", 5_000, 150, 3) is None
