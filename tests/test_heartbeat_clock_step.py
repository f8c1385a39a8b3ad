"""An instance's clock stepped back by NTP within the skew tolerated (CLOCK_SKEW) is no
forger (found by review revfalse, hunting false tamper alarms): b's clock ran 60 s ahead,
every other instance read (and remembered) its heartbeats signed that far ahead, then NTP
set it right. Its genuine heartbeats and acks, signed up to 60 s earlier than the newest
read, were refused by every other instance as replays ("written again after a heartbeat
of it at least as new was read"), deleted from the store at every read (b gone from the
fleet, receipts short) and counted in `killgate_state_unverified_total` (the shipped alert,
the console's red "store value(s) refused" badge) for the whole minute, with nobody
writing a byte. A heartbeat is now signed after the one before while the clock stands
behind it by no more than the skew tolerated (what the others remember at most ahead of
their clock); a step back further (an hour's correction) is still taken as it is. Real
redis-server, two stores, real signed heartbeats."""

from __future__ import annotations

import time

import pytest

from gateway.state.redisidem import CLOCK_SKEW
from gateway.state.store import Ack
from tests.conftest import RedisServer, wait_until
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("ahead", [2.0, 60.0, CLOCK_SKEW - 10])
async def test_a_clock_stepped_back_within_the_skew_is_no_replay(
        redis_server: RedisServer, ahead: float) -> None:
    async with two_stores(redis_server, "kgstep", listen=True) as pair:
        a, b, got, refused = pair.a, pair.b, pair.got, pair.refused
        b.clock = lambda: time.time() + ahead  # type: ignore[method-assign]
        await b.heartbeat("b", 1, "sha256:x")
        assert (await a.fleet(5.0))["b"]["generation"] == 1
        await wait_until(lambda: Ack("b", 1, "sha256:x") in got, 3, what="b's first ack")
        b.clock = time.time  # type: ignore[method-assign]  # (NTP set it right)
        for gen in (2, 3):
            await b.heartbeat("b", gen, "sha256:x")
            await wait_until(lambda g=gen: Ack("b", g, "sha256:x") in got or refused, 3,
                             what=f"b's ack of {gen} judged")
            fleet = await a.fleet(5.0)
            assert fleet.get("b", {}).get("generation") == gen, (fleet, refused)
        assert refused == []


async def test_a_clock_stepped_back_further_is_taken_as_it_is(
        redis_server: RedisServer) -> None:
    """An hour's correction: not signed an hour ahead for the hour (the others never
    remembered a heartbeat that far ahead: nothing refuses the corrected ones)."""
    async with two_stores(redis_server, "kgstepfar") as pair:
        a, b, refused = pair.a, pair.b, pair.refused
        b.clock = lambda: time.time() + 3600  # type: ignore[method-assign]
        await b.heartbeat("b", 1, "sha256:x")
        b.clock = time.time  # type: ignore[method-assign]
        await b.heartbeat("b", 2, "sha256:x")
        assert abs(b._last_wall / 1000 - time.time()) < 5
        assert (await a.fleet(5.0))["b"]["generation"] == 2 and refused == []
