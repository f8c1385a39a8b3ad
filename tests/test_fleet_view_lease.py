"""A fleet read asked for a longer lease (the console's `/v1/fleet`: 12 leases, to show
silent instances) does not loosen the replay bounds (found by review revfalse2: it set the
lease that bounds a pushed ack's age to 12 leases, so after each console refresh an ack
captured up to 120 leases (and the skew) ago, published again, was taken until the next
fleet read of the instance lease; stored heartbeats were judged with it too). The bounds
follow `state.instance_lease` (the store's `beat_lease`). Real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.state.store import Ack
from tests.conftest import RedisServer, wait_until
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(20)


async def test_a_console_fleet_read_does_not_loosen_the_ack_age_bound(
        redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgview", listen=True) as pair:
        a, b, got, refused = pair.a, pair.b, pair.got, pair.refused
        a.beat_lease = 5.0  # (as serve sets it: state.instance_lease)
        now = time.time()
        # b signed 600 s ago: past 10 leases and the skew (350 s), within 120 leases (900 s)
        b._boot = (int(now * 1000) - 600_000, "0ld0", b.since())
        b.clock = lambda: now - 600  # type: ignore[method-assign]
        await b.heartbeat("b", 1, "sha256:x")
        old = (await asyncio.to_thread(redis_server.cmd, "HGET", "kgview:instances",
                                       "b")).partition(" ")[2]
        await wait_until(lambda: Ack("b", 1, "sha256:x") in got, 3, what="the first ack")
        await a.fleet(5.0 * 12)  # (the console's read: LOST_AFTER leases)
        a._newest_pushed = a._pushed_places = None  # (a process started after the capture)
        got.clear()
        refused.clear()
        await asyncio.to_thread(redis_server.cmd, "PUBLISH", "kgview:acks", old)
        await wait_until(lambda: refused or got, 3, what="the old ack to be judged")
        assert got == [] and "ack: 'b' signed 600s ago: a replay" in refused[0], (got, refused)
