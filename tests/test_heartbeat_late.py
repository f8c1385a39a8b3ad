"""A genuine heartbeat executed late by redis is no replay (found by review revfalse,
hunting false tamper alarms): redis stalled (SIGSTOP, a paused VM, a fork on a huge
dataset) past the command timeout; the heartbeat sent meanwhile timed out here, but its
bytes were in the socket, and redis ran the script once it went on. Signed before the
stall, it was written (stamped fresh) and published after it: every other instance
refused it as a replay ("signed ... before the store's clock") and counted it in
`killgate_state_unverified_total`, where nobody but the instance itself wrote a byte.
The script now drops a heartbeat signed longer ago, by the store's clock, than the others
take one for live (what they would refuse anyway), so a refusal for age is never a
genuine late write: it stays counted as tamper (a replay by someone who can write to
redis). The skew tolerated is made small here (it is 300 s), so a stall of a few seconds
is "long". Real redis-server, frozen for real."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.errors import StateError
from gateway.state import fleetread, redisaux, redisbeats
from tests.conftest import RedisServer, wait_until
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(30)

LEASE = 0.05  # (10 leases and the skew: 0.7 s)


async def test_a_heartbeat_run_late_by_a_stalled_redis_is_not_a_replay(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.state.store import Ack

    for mod in (redisbeats, redisaux, fleetread):
        monkeypatch.setattr(mod, "CLOCK_SKEW", 0.2)
    refused: list[str] = []
    got: list[object] = []
    a, b = store_on(redis_server, "kglate"), store_on(redis_server, "kglate", timeout=0.3)
    a.listen(got.append)
    a.on_unverified = (  # type: ignore[method-assign]
        lambda kind, why, which, cause="other": refused.append(f"{kind}: {why}"))
    await a.open()
    await b.open()
    try:
        b.beat_lease = LEASE  # (as state/__init__.py sets it: state.instance_lease)
        await b.heartbeat("b", 1, "sha256:x")  # (its answer: the store's clock is b's)
        assert (await a.fleet(LEASE))["b"]["generation"] == 1
        await wait_until(lambda: Ack("b", 1, "sha256:x") in got, 3, what="b's first ack")
        redis_server.freeze()
        try:
            with contextlib.suppress(StateError):  # (timed out: it may run later)
                await b.heartbeat("b", 2, "sha256:x")
            await asyncio.sleep(1.2)  # (the stall itself: redis is stopped)
        finally:
            redis_server.thaw()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.4:  # (whatever redis ran late is read by now)
            await a.fleet(LEASE)
            await asyncio.sleep(0.05)
        assert refused == [], refused
        await b.heartbeat("b", 3, "sha256:x")
        await wait_until(lambda: Ack("b", 3, "sha256:x") in got, 3, what="b's next ack")
        assert (await a.fleet(LEASE))["b"]["generation"] == 3
        assert refused == [], refused
    finally:
        await a.close()
        await b.close()
