"""The store's connections (state/redislink.py) against a frozen redis (SIGSTOP: the kernel
still completes each connect, nothing answers): every call gives up within its own
deadline, however many wait on the same connection. Real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StoreUnavailable
from gateway.state.redislink import RedisLink
from gateway.state.signing import Keyring
from tests.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.5


async def _gave_up_after(link: RedisLink) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(StoreUnavailable, match="did not answer in time"):
        await link._call("PING")
    return loop.time() - t0


async def test_calls_waiting_for_one_connect_share_its_deadline(
        redis_server: RedisServer) -> None:
    # (each caller queued behind a lock took its own turn at connecting once the one
    # before it had timed out: the sixth of six calls (a poll, a heartbeat, admin reads
    # and writes at once) gave up after 6 x the command timeout, the hundredth after 50 s)
    link = RedisLink(redis_server.url, "t", TIMEOUT, keys=Keyring(None))
    redis_server.freeze()
    try:
        took = await asyncio.gather(*(_gave_up_after(link) for _ in range(6)))
    finally:
        redis_server.thaw()
    # (a connect is the TCP connect and the handshake, each with the command timeout)
    assert max(took) < 2 * TIMEOUT + 0.5, took
    assert await link._call("PING") == b"PONG"  # (thawed: the next call connects afresh)
    await link._close_conns()


async def test_a_call_connecting_as_the_store_closes_is_told_so(
        redis_server: RedisServer) -> None:
    # (the connect is cancelled, never left to finish after the close; its caller is told
    # why, not cancelled itself)
    link = RedisLink(redis_server.url, "t", 5.0, keys=Keyring(None))
    redis_server.freeze()
    try:
        call = asyncio.ensure_future(link._call("PING"))
        await asyncio.sleep(0.2)  # (connected at TCP, the handshake unanswered)
        await link._close_conns()
        with pytest.raises(StoreUnavailable, match="closed as it connected"):
            await asyncio.wait_for(call, 5.0)
    finally:
        redis_server.thaw()
    assert link._conns == {} and link._connecting == {}
