"""RespConnection (state/resp.py) when a command cannot be sent or the server answers
garbage: replies stay matched to their own calls, and the error says what happened. Real
redis-server where a server answers; a loopback server that speaks something else for the
garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from gateway.errors import StoreUnavailable
from gateway.state.redislink import RedisLink
from gateway.state.resp import RespConnection, connect, parse_endpoint
from gateway.state.signing import Keyring
from tests.conftest import RedisServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def conn(redis_server: RedisServer) -> AsyncIterator[RespConnection]:
    c = await connect(parse_endpoint(redis_server.url), 5.0)
    yield c
    await c.aclose()


@pytest.mark.parametrize("bad", [None, "\udcff"], ids=["none", "lone-surrogate"])
async def test_a_command_that_cannot_be_sent_leaves_the_next_replies_to_their_calls(
        conn: RespConnection, bad: object) -> None:
    # (hiredis refuses the argument: nothing is written, so no reply is owed to it; it
    # was queued first, and every later reply went to the call before its own)
    with pytest.raises((TypeError, UnicodeEncodeError)):
        conn.send("ECHO", bad)  # type: ignore[arg-type]
    first = conn.send("ECHO", "first")
    second = conn.send("ECHO", "second")
    got = await asyncio.wait_for(asyncio.gather(first, second), 5.0)
    assert got == [b"first", b"second"]  # (before: the first reply went to nothing)
    assert await conn.call("ECHO", "third", timeout=5.0) == b"third"
    assert conn.is_open


class _FakeTransport(asyncio.Transport):
    """Records what is written; abort() tells the protocol, a loop turn later, as asyncio's
    transports do."""

    def __init__(self, proto: RespConnection) -> None:
        super().__init__()
        self.proto, self.sent, self._closing = proto, b"", False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += bytes(data)

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self.proto.connection_lost, None)


async def test_garbage_mid_stream_fails_the_calls_behind_it_saying_so() -> None:
    proto = RespConnection()
    proto.connection_made(_FakeTransport(proto))
    ok, behind = proto.send("SET", "k", "v"), proto.send("GET", "k")
    proto.data_received(b"+OK\r\n\x00\x01not resp\r\n")
    assert await ok == b"OK"  # (the reply before the garbage is still its call's)
    with pytest.raises(ConnectionError, match="not the redis protocol") as got:
        await asyncio.wait_for(behind, 5.0)
    assert "Protocol error" in str(got.value)  # (hiredis's words: the byte it choked on)
    assert not proto.is_open  # (the stream cannot be read in step again)


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    """A loopback server that answers whatever it is sent as an HTTP server does."""
    handlers: set[asyncio.Task[Any]] = set()

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        handlers.add(cast("asyncio.Task[Any]", asyncio.current_task()))
        try:
            await r.read(64)
            w.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                    b"connection: close\r\n\r\n")
            await w.drain()
        finally:
            w.transport.abort()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    # (every connection closed before this test's loop is: one left to the loop's end was
    # an unclosed transport warning in a later test)
    if handlers:
        await asyncio.wait(handlers, timeout=5)


async def test_a_url_at_a_server_of_another_protocol_says_so(http_port: int) -> None:
    # (before: "redis at 127.0.0.1:<port> is unreachable: the redis connection closed",
    # of a server that had answered at once)
    link = RedisLink(f"redis://127.0.0.1:{http_port}/0", "t", 5.0, keys=Keyring(None))
    try:
        with pytest.raises(StoreUnavailable) as got:
            await link._call("PING")
    finally:
        await link._close_conns()
    msg = str(got.value)
    assert f"redis at 127.0.0.1:{http_port}" in msg, msg
    assert "unreachable" not in msg, msg
    assert "not the redis protocol" in msg and "state.url" in msg, msg
