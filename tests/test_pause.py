"""The store-loss drill's outage (state/pause.py) on a real redis-server: every client
waits for the pause, which ends by itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from gateway.errors import StoreUnavailable
from gateway.state.pause import check_store, pause_store
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



async def test_a_frozen_store_is_named_as_not_answering(redis_server: RedisServer) -> None:
    # (SIGSTOP: the kernel still accepts the connection, nothing answers the handshake;
    # before, the timeout's empty text ended the message: "cannot reach the store to pause
    # it: ", and the drill's check said "cannot reach the store given to pause ()")
    redis_server.freeze()
    try:
        with pytest.raises(StoreUnavailable) as got:
            await pause_store(redis_server.url, 0.5, timeout=0.3)
        why = await check_store(redis_server.url, "p", ["i"], timeout=0.3)
    finally:
        redis_server.thaw()
    assert str(got.value) == "cannot reach the store to pause it: no answer within 0.3s"
    assert why == "cannot reach the store given to pause (no answer within 0.3s)"


async def test_a_pause_left_unanswered_may_be_in_force() -> None:
    # (a store that takes the handshake and then answers nothing: CLIENT PAUSE may have
    # been done, and is not "refused": the operator is told it ends by itself)
    handlers: set[asyncio.Task[Any]] = set()

    async def mute_after_handshake(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        handlers.add(cast("asyncio.Task[Any]", asyncio.current_task()))
        data = b""
        try:
            while b"PAUSE" not in data:
                chunk = await r.read(4096)
                if not chunk:
                    return
                data += chunk
                if b"SETNAME" in chunk:
                    w.write(b"+OK\r\n")
            await r.read()  # (until the client gives up)
        finally:
            w.transport.abort()

    server = await asyncio.start_server(mute_after_handshake, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(StoreUnavailable) as got:
            await pause_store(f"redis://127.0.0.1:{port}/0", 0.5, timeout=0.3)
    finally:
        server.close()
        await server.wait_closed()
        if handlers:  # (closed before this test's loop is: else "unclosed transport")
            await asyncio.wait(handlers, timeout=5)
    assert str(got.value) == ("the store did not answer the pause within 0.3s: it may be in "
                              "force, and ends by itself 0.5s after it was asked"), got.value
