"""An idempotency record carries its signed expiry (the writer's clock + its TTL), so that a
genuine record put back after its TTL removed it is not answered from. Read against the
reader's own clock alone, a claim (a 15 s lease) made by an instance whose clock is 60 s
behind another's was taken by the other as "put back after it expired": a tamper alarm for
nothing, and the retry it was checked for ran the write a second time while the first still
ran. Clocks this far apart are what the heartbeats tolerate (redisaux's CLOCK_SKEW); so
does the expiry now. A record put back long after its expiry is still refused
(test_attacks_state). On a real redis-server."""

from __future__ import annotations

import time

import pytest

from tests.conftest import RedisServer
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(20)


async def test_a_claim_by_an_instance_whose_clock_is_behind_is_honoured(
        redis_server: RedisServer) -> None:
    from gateway.state.redis import RedisStore

    alarms: list[tuple[str, str]] = []

    def report(kind: str, problem: str, which: str | None, cause: str = "other") -> None:
        alarms.append((kind, problem))

    def store() -> RedisStore:
        return store_on(redis_server, "kgskew", on_unverified=report)

    behind, ahead = store(), store()
    ahead.clock = lambda: time.time() + 60.0  # type: ignore[method-assign]
    await behind.open()
    await ahead.open()
    try:
        first = {"fingerprint": "f", "holder": "first"}
        retry = {"fingerprint": "f", "holder": "retry"}
        assert await behind.idem_claim("k", first, 15.0) is None
        # the retry, on the instance whose clock is ahead: the first's write still runs
        assert await ahead.idem_claim("k", retry, 15.0) == first
        assert await behind.idem_renew("k", first, 15.0)  # (still the first's)
        # an answer written there is answered from here, too
        await behind.idem_set("k", {"fingerprint": "f", "status": 200, "response": {}}, 15.0)
        got = await ahead.idem_claim("k", retry, 15.0)
        assert got is not None and got.get("status") == 200
        assert alarms == []
    finally:
        await behind.close()
        await ahead.close()
