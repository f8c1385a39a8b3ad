"""Callers racing to claim an idempotency key whose record they cannot open (bytes nobody
signed; a record past its signed expiry; one under a retired key): `idem_claim` replaces
it, and after three rounds that found the record changed it takes the key as claimed
(revleft, suspicion 3: could two racing callers both run the write, or one never?).

Cleared: a round that loses the replace reads the key again with SET NX, and a winner's
record there is signed, so it is answered from (`existing`): of callers racing over one
unopenable record, exactly one claims and every other gets the winner's claim, whatever
the interleaving. Only a writer that replaces the key with junk again within each of a
caller's three rounds makes it run unclaimed: the same as that writer deleting the claim
(which needs no race), and the write is not refused for it (a kill must not wait on
someone scribbling on its key). Real redis-server, one store (connection) per caller."""

from __future__ import annotations

import asyncio

import pytest

from gateway.state.redis import RedisStore
from tests.conftest import RedisServer
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(60)

CALLERS = 8


async def test_callers_racing_over_an_unopenable_record_claim_it_once(
        redis_server: RedisServer) -> None:
    stores: list[RedisStore] = [store_on(redis_server, "kgrace") for _ in range(CALLERS)]
    try:
        for round_ in range(25):
            key = f"k{round_}"
            assert redis_server.cmd("SET", f"kgrace:idem:{key}", "junk", "PX", "60000") == "OK"
            got = await asyncio.gather(*(s.idem_claim(key, {"holder": f"h{i}"}, 30.0)
                                         for i, s in enumerate(stores)))
            winners = [i for i, g in enumerate(got) if g is None]
            assert len(winners) == 1, (round_, got)
            assert all(g == {"holder": f"h{winners[0]}"} for g in got if g is not None), got
    finally:
        await asyncio.gather(*(s.close() for s in stores))
