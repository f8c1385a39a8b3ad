"""A sentinel's answer is not trusted to be an address. One that names a port that is
not a number (hostile, or broken) raised ValueError out of the ask of every sentinel,
and the connect failed although the other sentinels agreed on the master.

The sentinels here are tiny RESP servers on loopback: the test is about what one of them
may answer, which a real sentinel cannot be made to say."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gateway.state.resp import parse_endpoint
from gateway.state.sentinels import _ask_all, _majority

pytestmark = pytest.mark.timeout(30)


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


@asynccontextmanager
async def sentinel(host: bytes, port: bytes) -> AsyncIterator[int]:
    """Answers every command with the array [host, port]."""
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while await r.read(4096):
                w.write(b"*2\r\n" + _bulk(host) + _bulk(port))
                await w.drain()
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("bad", [(b"127.0.0.1", b"abc"), (b"127.0.0.1", b"99999"),
                                 (b"\xff\xfe", b"6379"), (b"", b"6379")])
async def test_one_bad_sentinel_does_not_fail_the_connect_the_others_agree_on(
        bad: tuple[bytes, bytes]) -> None:
    async with sentinel(*bad) as c:
        ep = parse_endpoint(f"redis+sentinel://127.0.0.1:{c}/mymaster/0")
        (why,) = await _ask_all(ep, 2.0, [("127.0.0.1", c)])  # (it raised ValueError)
        assert isinstance(why, str) and "named no address" in why, why
        async with sentinel(b"127.0.0.1", b"6390") as a, \
                sentinel(b"127.0.0.1", b"6390") as b:
            answers = await _ask_all(ep, 2.0, [("127.0.0.1", c), ("127.0.0.1", a),
                                               ("127.0.0.1", b)])
            assert _majority(answers, 3) == ("127.0.0.1", 6390), answers
