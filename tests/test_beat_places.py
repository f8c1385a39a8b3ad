"""Heartbeats ordered by their place among their process's, not by their signed time
(state/beatorder.py `Place`, state/redisbeats.py), on a real redis-server.

An instance whose clock NTP steps back by S signs its next heartbeats "earlier" than the
newest already read of it: ordered by signed time, each was refused as a replay for S
(stored: "written again", deleted from the store at every read; pushed: "signed no
later"), so receipts went short of it and drills lost it. Ordered by place, they are
taken (also when the step is past the skew tolerated: their place tells their age too),
and a capture put back (stored, or PUBLISHed) is still refused. And a process that
starts after a capture knows the places the store holds from its start: the capture put
back is refused then too, not taken once as its first news of that instance."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_section
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(20)

STEP = 120.0  # (s: an NTP step back, well inside the skew tolerated: CLOCK_SKEW)


def _store(url: str, prefix: str):  # type: ignore[no-untyped-def]
    from gateway.state.redis import RedisStore
    from gateway.state.signing import Key, Keyring

    return RedisStore(url, prefix, 1.0, keys=Keyring(Key.of(STATE_KEY.encode())))


def _store_ms(redis: RedisServer) -> int:
    parts = [p for p in redis.cmd("TIME").split("\r\n") if p.isdigit()]
    return int(parts[0]) * 1000 + int(parts[1]) // 1000


async def _stored(redis: RedisServer, prefix: str, name: str) -> str:
    """`name`'s signed heartbeat as stored (without the store's stamp of arrival)."""
    raw = await asyncio.to_thread(redis.cmd, "HGET", f"{prefix}:instances", name)
    return raw.partition(" ")[2]


async def _put_back(redis: RedisServer, prefix: str, name: str, record: str) -> None:
    """`record` written back raw, stamped now (as a replay must be, to count as live)."""
    stamped = f"{await asyncio.to_thread(_store_ms, redis)} {record}"
    await asyncio.to_thread(redis.cmd, "HSET", f"{prefix}:instances", name, stamped)


async def test_an_instance_whose_clock_stepped_back_is_heard_and_replays_are_not(
        redis_server: RedisServer) -> None:
    from gateway.state.store import Ack

    a, b = _store(redis_server.url, "kgstep"), _store(redis_server.url, "kgstep")
    got: list[object] = []
    refused: list[str] = []
    a.listen(got.append)
    a.on_unverified = lambda kind, why, which, cause="other": refused.append(  # type: ignore[method-assign]
        f"{kind}: {why}")
    await a.open()
    await b.open()
    try:
        await b.heartbeat("b", 1, "sha256:x")
        await wait_until(lambda: Ack("b", 1, "sha256:x") in got, 3, what="b's first ack")
        assert (await a.fleet(5.0))["b"]["generation"] == 1
        captured = await _stored(redis_server, "kgstep", "b")
        b.clock = lambda: time.time() - STEP  # type: ignore[method-assign]  # (NTP steps it back)
        await b.heartbeat("b", 2, "sha256:x")
        await wait_until(lambda: Ack("b", 2, "sha256:x") in got or refused, 3,
                         what="b's ack after the step to be judged")
        assert refused == [] and got[-1] == Ack("b", 2, "sha256:x"), (got, refused)
        fleet = await a.fleet(5.0)
        assert fleet.get("b", {}).get("generation") == 2, (fleet, refused)
        # the capture from before the step (signed later by the wall clock, placed
        # earlier), put back: stored, then PUBLISHed
        await _put_back(redis_server, "kgstep", "b", captured)
        assert "b" not in await a.fleet(5.0)
        assert refused and refused[-1].startswith(
            "heartbeat: 'b' signed before a heartbeat of it already read"), refused
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgstep:acks", captured)
        await wait_until(lambda: len(refused) == 2, 3, what="the pushed replay to be judged")
        assert refused[1].startswith("ack: 'b' signed no later than an ack of it"), refused
        assert got[-1] == Ack("b", 2, "sha256:x")
        # b's next genuine heartbeat, its clock still stepped back: live, heard
        await b.heartbeat("b", 3, "sha256:x")
        await wait_until(lambda: Ack("b", 3, "sha256:x") in got, 3, what="b's next ack")
        assert (await a.fleet(5.0))["b"]["generation"] == 3
        assert len(refused) == 2, refused
    finally:
        await a.close()
        await b.close()


async def test_an_instance_whose_clock_stepped_back_an_hour_is_not_taken_for_old(
        redis_server: RedisServer) -> None:
    """Stepped back further than the skew tolerated (5 minutes, and 10 leases), b's
    heartbeats were refused as signed too long ago (stored and pushed, once a fleet read
    told the lease). Their place says when they were signed by the store's clock (b's
    start) and a clock no step moves: they are taken."""
    from gateway.state.store import Ack

    a, b = _store(redis_server.url, "kghour"), _store(redis_server.url, "kghour")
    got: list[object] = []
    refused: list[str] = []
    a.listen(got.append)
    a.on_unverified = lambda kind, why, which, cause="other": refused.append(  # type: ignore[method-assign]
        f"{kind}: {why}")
    await a.open()
    await b.open()
    try:
        await b.heartbeat("b", 1, "sha256:x")
        await wait_until(lambda: Ack("b", 1, "sha256:x") in got, 3, what="b's first ack")
        assert (await a.fleet(5.0))["b"]["generation"] == 1  # (the lease: the bound known)
        b.clock = lambda: time.time() - 3600  # type: ignore[method-assign]
        await b.heartbeat("b", 2, "sha256:x")
        await wait_until(lambda: Ack("b", 2, "sha256:x") in got or refused, 3,
                         what="b's ack after the step to be judged")
        assert refused == [] and got[-1] == Ack("b", 2, "sha256:x"), (got, refused)
        fleet = await a.fleet(5.0)
        assert fleet.get("b", {}).get("generation") == 2 and refused == [], (fleet, refused)
    finally:
        await a.close()
        await b.close()


async def test_a_process_started_after_a_capture_refuses_it_put_back(
        redis_server: RedisServer) -> None:
    """c starts after b's heartbeat 1 was captured (b beat again since): its memory of
    what it read was empty, so the capture, put back (stored, or PUBLISHed), was its
    first news of b and taken once: b "live" at the generation it had then, b's ack of a
    generation it left heard again. It knows the places the store holds from its start."""
    from gateway.state.store import Ack

    b = _store(redis_server.url, "kgseed")
    await b.open()
    c = _store(redis_server.url, "kgseed")
    got: list[object] = []
    refused: list[str] = []
    c.listen(got.append)
    c.on_unverified = lambda kind, why, which, cause="other": refused.append(  # type: ignore[method-assign]
        f"{kind}: {why}")
    try:
        await b.heartbeat("b", 1, "sha256:x")
        captured = await _stored(redis_server, "kgseed", "b")
        await b.heartbeat("b", 2, "sha256:x")
        await c.open()  # (after the capture: what it read of b is the store's)
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgseed:acks", captured)
        await wait_until(lambda: refused or got, 3, what="the pushed replay to be judged")
        assert got == [] and refused[0].startswith(
            "ack: 'b' signed no later than an ack of it"), (got, refused)
        await _put_back(redis_server, "kgseed", "b", captured)
        fleet = await c.fleet(5.0)
        assert "b" not in fleet, fleet
        assert refused[-1].startswith(
            "heartbeat: 'b' signed before a heartbeat of it already read"), refused
        # b's next genuine heartbeat: live, heard (its ack in flight at c's start too: one
        # place after the seeded one)
        await b.heartbeat("b", 3, "sha256:x")
        await wait_until(lambda: Ack("b", 3, "sha256:x") in got, 3, what="b's next ack")
        assert (await c.fleet(5.0))["b"]["generation"] == 3
        assert len(refused) == 2, refused
    finally:
        await c.close()
        await b.close()


async def test_a_receipt_counts_an_instance_whose_clock_stepped_back(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    """Two gateways; NTP steps b's clock back: a kill through a answers with a receipt
    that b acked (its ack was refused as a replay: pending, b, or b not counted)."""
    p = await backends(echo_app("v1"))
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        configs.append(write_config(tmp_path / name, two_versions(p, p, 100, 0),
                                    state=redis_section(
            redis_server.url, "kgreceipt", tmp_path / name / "snap.json",
            poll_interval="100ms", heartbeat_interval="100ms", instance_lease="1s",
            command_timeout="300ms")))
    async with running_gateway(configs[0], "a") as a, running_gateway(configs[1], "b") as b:
        fleet, tamper = a.gw.sync.peers, a.gw.sync.tamper
        await wait_until(lambda: "b" in fleet.acks, 5, what="a to hear b")
        b.gw.sync.store.clock = lambda: time.time() - STEP
        for _ in range(2):  # (the stored heartbeat changed twice: one signed after the step)
            was = await _stored(redis_server, "kgreceipt", "b")
            await wait_until(lambda was=was: redis_server.cmd(
                "HGET", "kgreceipt:instances", "b").partition(" ")[2] != was, 3,
                             what="b to beat after the step")
        assert "b" in await fleet.live()
        got = await kill(session, a.admin, wait="2s", scope="version", route="iris",
                         version="v2")
        assert got["applied"]["instances"] == 2 and got["applied"]["pending"] == [], got
        assert tamper.counts.get("ack", 0) == 0 and tamper.counts.get("heartbeat", 0) == 0, \
            tamper.status()


def test_a_time_field_is_read_with_its_place_and_an_older_versions_without() -> None:
    from gateway.state.beatorder import Place, split_time

    assert split_time("1700000000123") == (1700000000123, None)  # (an older version's)
    got = split_time("1700000000123.1700000000000.0a1b2c3d.7.65000")
    assert got == (1700000000123, Place(1700000000000, "0a1b2c3d", 7))
    assert got[1] is not None and got[1].at_ms == 1700000065000
    assert split_time("9." + Place(5, "ab", 3, 4).text()) == (9, Place(5, "ab", 3))
    for bad in ("", "x", "12.3", "12.3.ab", "12.3.ab.4", "12.x.ab.4.5",
                "12.3..4.5", "12.3.a b.4.5", "12.3.ab.-4.5", "12.3.ab.4.-5", "1" * 19,
                "12.3." + "a" * 17 + ".4.5"):
        assert split_time(bad) is None, bad
    # ordered by start, then by count (not by the time since the start: a genuine
    # process never signs two at one place): a later start wins whatever its count
    assert Place(1, "a", 9) < Place(1, "a", 10) < Place(2, "a", 0)
    assert Place(1, "a", 9, 5) == Place(1, "a", 9, 6)


def test_places_refuse_earlier_and_restamped_and_forget_the_oldest() -> None:
    from gateway.state.beatorder import NewestPlaces, Place

    places = NewestPlaces(limit=2)
    p1, p2 = Place(100, "t", 1), Place(100, "t", 2)
    assert places.stored_replay("b", p1, 1_000) is None
    places.saw("b", p2, 2_000)
    assert "signed before a heartbeat of it already read" in str(
        places.stored_replay("b", p1, 3_000))
    assert places.stored_replay("b", p2, 2_000) is None  # (the same write, read again)
    assert "written again" in str(places.stored_replay("b", p2, 3_000))
    assert places.stored_replay("b", Place(100, "t", 3), 3_000) is None
    assert places.stored_replay("b", Place(101, "u", 0), 3_000) is None  # (a new start)
    places.saw("b", p1, 4_000)  # (older: the newest stays)
    assert places.seen["b"] == (p2, 2_000)
    assert places.pushed_replay("c", p1) is None and places.seen["c"] == (p1, 0)
    assert "no later than an ack of it" in str(places.pushed_replay("c", p1))
    places.saw("d", p1, 0)
    assert set(places.seen) == {"c", "d"}
