"""The store-loss drill's outage (state/pause.py) on a real redis-server: every client
waits for the pause, which ends by itself."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import StoreUnavailable
from gateway.state.pause import pause_store
from tests.conftest import RedisServer, free_port


async def test_pause_holds_every_client_then_ends_by_itself(redis_server: RedisServer) -> None:
    await pause_store(redis_server.url, 0.6)
    t0 = time.monotonic()
    assert await asyncio.to_thread(redis_server.cmd, "PING") == "PONG"
    waited = time.monotonic() - t0
    assert 0.4 < waited < 3.0, waited


async def test_an_unreachable_store_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match="cannot reach the store"):
        await pause_store(f"redis://127.0.0.1:{free_port()}/0", 0.5, timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await pause_store("redis://[nope", 0.5)

