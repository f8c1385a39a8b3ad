"""A rolling upgrade: this version shares one redis with the NEXT one for minutes, and
orders the heartbeats that one writes (state/beatorder.split_time), on a real redis-server.

A heartbeat's signed time is "wall.boot.tag.seq.since" (its place among its process's
heartbeats). A newer version adding a part to it ("...since.<more>") made this one read
the field as malformed: every heartbeat and ack of a newer instance was taken unordered,
so a capture of one put back into `<prefix>:instances`, or PUBLISHed again on the acks
channel, was taken as live (a stopped instance kept in receipts and drills) and never
refused. Found at stop 38 (impupgrade item 1). The format rule: a newer version may add
parts after the first five, which keep their meaning; this one places it by them.
Here the newer instance's records are written as that version would write them, signed
with the test key."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import STATE_KEY, RedisServer, wait_until

pytestmark = pytest.mark.timeout(20)

PREFIX = "kgnewbeat"


def _store(url: str):  # type: ignore[no-untyped-def]
    from gateway.state.redis import RedisStore
    from gateway.state.signing import Key, Keyring

    return RedisStore(url, PREFIX, 1.0, keys=Keyring(Key.of(STATE_KEY.encode())))


def _store_ms(redis: RedisServer) -> int:
    parts = [p for p in redis.cmd("TIME").split("\r\n") if p.isdigit()]
    return int(parts[0]) * 1000 + int(parts[1]) // 1000


def newer_beat(instance: str, generation: int, boot_ms: int, seq: int,
               more: str = "zone-a.42") -> str:
    """A heartbeat as a newer version signs it: its place, then parts this one does not
    know (`more`), signed with the rest."""
    from gateway.state.signing import Key, Keyring

    keys = Keyring(Key.of(STATE_KEY.encode()), context=PREFIX)
    now = int(time.time() * 1000)
    wall = f"{now}.{boot_ms}.0a1b2c3d.{seq}.{now - boot_ms}.{more}"
    kid, mac = keys.sign(b"ack", f"{instance}\x00{generation}\x00{wall}\x00-".encode())
    return f"{kid} {mac} {generation} {wall} - {instance}"


def test_a_newer_versions_time_field_is_placed_by_its_first_five_parts() -> None:
    from gateway.state.beatorder import MAX_TIME_PARTS, Place, split_time

    assert split_time("9.5.ab.3.4.x") == (9, Place(5, "ab", 3, 4))
    assert split_time("9.5.ab.3.4.x.y.") == (9, Place(5, "ab", 3, 4))
    assert split_time("9.5.ab.3.4" + ".x" * (MAX_TIME_PARTS - 5)) is not None
    # (a bound on what anyone who can write to the store makes this one split)
    assert split_time("9.5.ab.3.4" + ".x" * (MAX_TIME_PARTS - 4)) is None
    assert split_time("9.5.ab.3") is None and split_time("9.5.a b.3.4.x") is None


async def test_a_newer_instances_heartbeats_are_ordered_and_their_replays_refused(
        redis_server: RedisServer) -> None:
    from gateway.state.store import Ack

    a = _store(redis_server.url)
    got: list[object] = []
    refused: list[str] = []
    a.listen(got.append)
    a.on_unverified = lambda kind, why, which, cause="other": refused.append(  # type: ignore[method-assign]
        f"{kind}: {why}")
    await a.open()
    try:
        boot = await asyncio.to_thread(_store_ms, redis_server) - 1000
        first, second = newer_beat("n", 1, boot, 1), newer_beat("n", 2, boot, 2)
        for record in (first, second):  # (the newer instance beats twice: stored, pushed)
            stamp = await asyncio.to_thread(_store_ms, redis_server)
            await asyncio.to_thread(redis_server.cmd, "HSET", f"{PREFIX}:instances", "n",
                                    f"{stamp} {record}")
            await asyncio.to_thread(redis_server.cmd, "PUBLISH", f"{PREFIX}:acks", record)
            want = Ack("n", int(record.split(" ")[2]))
            await wait_until(lambda want=want: want in got, 3, what="the newer ack heard")
            assert (await a.fleet(5.0))["n"]["generation"] == want.generation
        assert refused == [], refused  # (a genuine newer heartbeat is never tamper)
        # the capture of the first, put back: stored with a fresh stamp, and PUBLISHed
        stamp = await asyncio.to_thread(_store_ms, redis_server)
        await asyncio.to_thread(redis_server.cmd, "HSET", f"{PREFIX}:instances", "n",
                                f"{stamp} {first}")
        fleet = await a.fleet(5.0)
        assert "n" not in fleet, fleet  # (taken unordered before: live at generation 1)
        assert refused and refused[-1].startswith(
            "heartbeat: 'n' signed before a heartbeat of it already read"), refused
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", f"{PREFIX}:acks", second)
        await wait_until(lambda: len(refused) == 2, 3, what="the pushed replay judged")
        assert refused[1].startswith("ack: 'n' signed no later than an ack of it"), refused
        assert got.count(Ack("n", 2)) == 1, got
    finally:
        await a.close()
