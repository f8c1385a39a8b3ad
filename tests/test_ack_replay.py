"""Replayed acks on the acks channel (state/redisbeats.py `_pushed_ack`), real redis-server,
two in-process gateways: b's genuine signed ack, captured, PUBLISHed again by raw redis
commands after b stopped. Taken as heard, it kept b live in a's fleet for a lease after
each replay: a kill's receipt waited for (or counted) an instance that is gone, and a
drill's started_with named it. Refused now, and counted as a refused "ack"."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.state.beatorder import NewestBeats, pushed_replay
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_section, two_stores

pytestmark = pytest.mark.timeout(20)


def _state(redis: RedisServer, tmp: Path, name: str) -> str:
    return redis_section(redis.url, "kgacks", f"{tmp}/snapshot-{name}.json",
                         poll_interval="100ms", heartbeat_interval="100ms",
                         instance_lease="400ms", command_timeout="300ms")


async def test_a_stopped_instance_s_ack_published_again_does_not_make_it_live(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        configs.append(write_config(tmp_path / name, two_versions(p, p, 100, 0),
                                    state=_state(redis_server, tmp_path, name)))
    async with running_gateway(configs[0], "a") as a:
        fleet, tamper = a.gw.sync.peers, a.gw.sync.tamper
        async with running_gateway(configs[1], "b"):
            await wait_until(lambda: "b" in fleet.acks and fleet.watching_since is not None
                             and time.monotonic() - fleet.watching_since > 0.25, 5,
                             what="a to hear b's acks as pushes")
            assert "b" in await fleet.live()
            # b's signed ack, as it was published (the heartbeat record stores the same)
            stored = await asyncio.to_thread(redis_server.cmd, "HGET", "kgacks:instances", "b")
            captured = stored.partition(" ")[2]
            assert captured.endswith(" b") and tamper.counts.get("ack", 0) == 0
        async def gone() -> bool:
            return "b" not in await fleet.live()

        await wait_until(gone, 3, what="b's lease to run out")
        # the replay, then a malformed ack: both read in order on the one subscription,
        # so when the second is counted, the first has been judged
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgacks:acks", captured)
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgacks:acks", "not an ack")
        await wait_until(lambda: tamper.last is not None and tamper.last["kind"] == "ack"
                         and "replay" not in tamper.last["problem"], 3,
                         what="a to read both")
        live = await fleet.live()
        assert "b" not in live, live
        assert "b" not in fleet.heard
        assert tamper.counts["ack"] == 2, tamper.status()
        assert tamper.by_cause.get("other", 0) >= 2, tamper.by_cause


async def test_an_ack_signed_long_ago_is_refused_once_the_lease_is_known(
        redis_server: RedisServer) -> None:
    """An ack this process never read before (captured before it started) signed longer
    ago than a fleet read takes a heartbeat for live (10 leases and the clock skew
    tolerated) is refused; not before the lease is known (no fleet read yet: order alone
    then). b's next genuine ack is taken, and the same one PUBLISHed again is not."""
    from gateway.state.store import Ack

    async with two_stores(redis_server, "kgold", listen=True) as pair:
        a, b, got, refused = pair.a, pair.b, pair.got, pair.refused

        async def ack(clock_s: float, gen: int) -> str:
            b.clock = lambda: clock_s  # type: ignore[method-assign]
            await b.heartbeat("b", gen, "sha256:x")
            raw = await asyncio.to_thread(redis_server.cmd, "HGET", "kgold:instances", "b")
            return raw.partition(" ")[2]

        now = time.time()
        old = await ack(now - 1000, 1)
        await wait_until(lambda: Ack("b", 1, "sha256:x") in got, 3, what="the first ack")
        await a.fleet(5.0)  # (the lease: 5 s; the bound: 50 s and 300 s of skew)
        a._newest_pushed = None  # (as a process started after it was captured)
        got.clear()
        refused.clear()  # (the fleet read refused the stored one too: its own check)
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgold:acks", old)
        await wait_until(lambda: refused, 3, what="the old ack to be judged")
        assert got == [] and "ack: 'b' signed 1000s ago: a replay" in refused[0], refused
        fresh = await ack(now, 2)
        await wait_until(lambda: Ack("b", 2, "sha256:x") in got, 3, what="b's next ack")
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgold:acks", fresh)
        await wait_until(lambda: len(refused) == 2, 3, what="the replay to be judged")
        assert got == [Ack("b", 2, "sha256:x")], got
        assert refused[1].startswith("ack: 'b' signed no later than an ack of it"), refused


def test_pushed_replay_refuses_old_and_not_newer_acks_and_remembers_only_what_it_takes() -> None:
    beats = NewestBeats()
    assert pushed_replay(beats, "b", 5_000, 100, 1.0, None, 300.0) is None
    assert beats.seen["b"] == (5_000, 100)
    assert "no later than an ack of it read 0.9s ago" in str(
        pushed_replay(beats, "b", 5_000, 1_000, 1.0, None, 300.0))
    assert "no later than" in str(pushed_replay(beats, "b", 4_000, 1_000, 2.0, 350.0, 300.0))
    assert "'b' signed 400s ago" in str(pushed_replay(beats, "b", 6_000, 1_000, 400.0, 350.0, 300.0))
    assert beats.seen["b"] == (5_000, 100)  # (refused: not remembered)
    assert pushed_replay(beats, "b", 6_000, 1_000, 0.1, 350.0, 300.0) is None
    assert beats.seen["b"] == (6_000, 1_000)
    # one signed an hour ahead is taken but not remembered: once that instance's clock is
    # set right, its genuine acks (signed earlier than it) are not replays
    assert pushed_replay(beats, "b", 3_606_000, 1_100, -3600.0, 350.0, 300.0) is None
    assert beats.seen["b"] == (6_000, 1_000)
    assert pushed_replay(beats, "b", 7_000, 1_200, 0.1, 350.0, 300.0) is None
