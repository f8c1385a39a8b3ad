"""RespConnection (state/resp.py) when a command cannot be sent or the server answers
garbage: replies stay matched to their own calls, and the error says what happened. Real
redis-server where a server answers; a loopback server that speaks something else for the
garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.state.resp import RespConnection, connect, parse_endpoint
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
