"""RELIABILITY row 21: Redis answering every command 500 ms late.

The gateway reaches Redis through a delay line. The data plane never waits on Redis, so
its latency does not move; the sync loop (with a `command_timeout` above the delay) keeps
working, and a kill still reaches the data plane and answers with its receipt.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    signed_ack,
    two_versions,
    wait_until,
    write_config,
)
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_killswitch import INFER, auth, kill, status_of


async def _p99(session, url: str, n: int = 300) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url + INFER) as r:
            await r.read()
            assert r.status == 200
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[int(n * 0.99) - 1]


async def test_slow_redis_leaves_the_data_plane_alone(tmp_path: Path, backends, session,
                                                      fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kgslow", command_timeout="2s")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        quiet = await _p99(session, g.url)
        fwd.latency = 0.5
        slow = await _p99(session, g.url)
        # "within noise": a request that waited on redis would take >= 0.5 s; the slack
        # covers two windows of few-ms figures on a noisy machine
        assert slow < quiet + 0.1, (quiet, slow)
        t0 = time.monotonic()
        receipt = await kill(session, g.admin, wait="10s", scope="route", route="iris")
        assert receipt["applied"]["acked"] == receipt["applied"]["instances"], receipt
        assert 0.5 <= time.monotonic() - t0 < 8.0  # slow, as Redis is, but done
        assert (await status_of(session, g.url))[0] == 503
        assert g.gw.sync.connected and g.gw.sync.last_error is None


async def test_unconfirmed_commit_is_reported_as_unknown(tmp_path: Path, backends, session,
                                                         fwd: Forwarder,
                                                         redis_server: RedisServer) -> None:
    """A commit that leaves but whose answer does not come back in time may have been
    applied: the call says so (503 outcome_unknown), not "nothing was changed"; and here it
    was applied — the kill arrives once Redis gets the delayed command."""
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kgunk", command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        fwd.latency = 1.0  # the command reaches Redis after the call gave up on it
        async with session.post(f"{g.admin}/v1/kill?wait=0s", headers=auth(),
                                json={"scope": "route", "route": "iris",
                                      "reason": "slow"}) as r:
            body = await r.json()
            assert r.status == 503 and body["error"]["type"] == "outcome_unknown", body
            assert "may be in force" in body["error"]["message"]
        fwd.latency = 0.0
        deadline = time.monotonic() + 10
        while (await status_of(session, g.url))[0] != 503:
            assert time.monotonic() < deadline, "the delayed commit never took effect"
            await asyncio.sleep(0.05)
        assert "route:iris" in redis_server.cmd("GET", "kgunk:state")


async def test_a_silent_subscription_is_replaced(tmp_path: Path, backends, fwd: Forwarder,
                                                 redis_server: RedisServer) -> None:
    """A subscription whose socket stays open but delivers nothing (a half-open
    connection) is noticed — our own heartbeats stop coming back on it — and replaced, so
    pushes flow again instead of the sync falling back to polling for good."""
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kgsil", heartbeat_interval="200ms",
                            command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        def subscriptions() -> list:
            return [ln for ln in fwd.links if b"SUBSCRIBE" in ln.head]

        await wait_until(lambda: len(subscriptions()) == 1, 5, what="the subscription")
        subscriptions()[0].muted = True
        t0 = time.monotonic()
        await wait_until(lambda: len(subscriptions()) == 2, 5,
                         what="a new subscription")
        assert time.monotonic() - t0 < 3.0  # 3 heartbeats + a timeout: ~0.9 s
        # pushes flow again: an ack only ever arrives by pub/sub (published until it
        # lands: the new subscription may still be completing)
        deadline = time.monotonic() + 3
        while g.gw.sync.acks.get("elsewhere") != 7:
            assert time.monotonic() < deadline, "no pushed ack after resubscribing"
            redis_server.cmd("PUBLISH", "kgsil:acks", signed_ack("kgsil", "elsewhere", 7))
            await asyncio.sleep(0.1)
