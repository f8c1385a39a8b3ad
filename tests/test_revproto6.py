"""Hostile review of the data plane, sixth pass (revproto6): what a backend does while a
client's streamed request body has stalled, against a real in-process gateway, a raw
backend and a raw client. (Each failed before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import RawServer
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.rawhttp import read_answer
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)

#: a body the gateway streams to the backend (over SMALL_BODY), of which the client sends
#: only the first part, then waits (for the answer, say: the backend has refused it)
STREAMED = {
    "length": b"Content-Length: 2000000\r\n\r\n" + b"a" * 100_000,
    "chunked": b"Transfer-Encoding: chunked\r\n\r\n186a0\r\n" + b"a" * 100_000 + b"\r\n",
}


class Refusing(RawServer):
    """Answers a request as soon as its head is in (`answer`; None: closes instead; b"":
    never answers), as a server refusing an upload does (401, 413), without reading its
    body."""

    def __init__(self, answer: bytes | None) -> None:
        super().__init__()
        self.answer = answer
        self.heads = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.heads += 1
        if self.answer is None:
            return  # (closed: RawServer ends the connection)
        writer.write(self.answer)
        await writer.drain()
        await asyncio.sleep(10)  # (keeps its side open: the answer is framed by its length)


@contextlib.asynccontextmanager
async def _stalled_upload(tmp_path: Path, answer: bytes | None, framing: str):
    """A client that sent the head and part of a streamed body, then stopped sending."""
    backend = Refusing(answer)
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                             + STREAMED[framing])
                await writer.drain()
                yield reader, backend, g
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    finally:
        await backend.stop()


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_an_early_answer_reaches_a_client_whose_body_has_stalled(tmp_path: Path,
                                                                        framing: str) -> None:
    """A backend that refuses an upload at its head (413 here) while the client's body is
    still coming: the gateway only noticed the answer when the client sent more body, so a
    client waiting (an upload paused, a slow stream) got nothing, then 408 'the request body
    stalled' after body_timeout (30 s), the backend's answer lost. It is forwarded at once
    (the connection then closes: the body was not read whole)."""
    refusal = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n"
               b"Content-Type: text/plain\r\n\r\ntoo big!")
    async with _stalled_upload(tmp_path, refusal, framing) as (reader, backend, _):
        status, headers, body = await read_answer(reader, timeout=3)
        assert (status, body) == (413, b"too big!")
        assert headers.get("connection") == "close"
        assert await asyncio.wait_for(reader.read(), 3) == b""  # and nothing after it
        assert backend.heads == 1


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_backend_that_closes_while_the_clients_body_has_stalled_is_a_502_at_once(
        tmp_path: Path, framing: str) -> None:
    """The backend closes the connection (no answer) while the client's body is stalled: a
    502 at once, not a 408 blaming the client after body_timeout."""
    async with _stalled_upload(tmp_path, None, framing) as (reader, _, _):
        status, headers, body = await read_answer(reader, timeout=3)
        assert status == 502, body
        assert b"upstream_failed" in body
        assert headers.get("connection") == "close"


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_kill_answers_a_client_whose_body_has_stalled_at_once(tmp_path: Path,
                                                                     framing: str) -> None:
    """A kill with abort_inflight cuts the backend exchange of a request whose client has
    stalled in its body: its client is answered 503 killed at once (it got nothing, then
    408 'the request body stalled' after body_timeout, blamed for a kill)."""
    async with _stalled_upload(tmp_path, b"", framing) as (reader, backend, g):
        await wait_until(lambda: backend.heads == 1, timeout=3)
        async with ClientSession() as session:
            await kill(session, g.admin, scope="route", route="iris", abort_inflight=True)
        status, headers, body = await read_answer(reader, timeout=3)
        assert status == 503, body
        assert b'"killed"' in body
        assert headers.get("connection") == "close"


class Trailing(RawServer):
    """A keep-alive backend whose chunked answers end with a trailer section holding
    `Connection: close` (it keeps serving the connection all the same: the bytes it sends
    next are a valid answer to the next request); counts its connections."""

    def __init__(self, field: bytes = b"Connection") -> None:
        super().__init__()
        self.field = field
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"4\r\ngood\r\n0\r\n%b: close\r\n\r\n" % self.field)
            await writer.drain()


@pytest.mark.parametrize("field", [b"Connection", b"Proxy-Connection"])
async def test_a_connection_closed_by_the_answers_trailer_is_not_reused(tmp_path: Path,
                                                                       field: bytes) -> None:
    """llhttp reads a trailer's `Connection: close` as the message's: the parser refuses any
    later answer on that connection ('Data after Connection: close'). The exchange judged
    keep-alive at the head only, so the connection went back to its pool and the next
    request on it got 502 'malformed response from backend' for a valid answer (or met the
    backend's close: a POST cannot be retried). Such a connection is never reused."""
    backend = Trailing()
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
                try:
                    writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 2\r\n\r\n{}")
                    status, _, body = await read_answer(reader, timeout=3)
                    assert (status, body) == (200, b"good"), body
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
            assert backend.connections == 3
    finally:
        await backend.stop()


@pytest.mark.parametrize("field", [b"Connection", b"Proxy-Connection"])
async def test_a_request_whose_trailer_says_close_is_the_last_and_says_so(
        tmp_path: Path, field: bytes) -> None:
    """llhttp reads a request trailer's `Connection: close` as the request's: a request
    pipelined after it was refused with a 400 'Data after `Connection: close`' after the
    first answer, which had said nothing of a close. That answer now says
    `Connection: close` and is the last: nothing after it."""
    backend = Trailing()
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
                             + field + b": close\r\n\r\n"
                             b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = await read_answer(reader, timeout=3)
                assert (status, body) == (200, b"good")
                assert headers.get("connection") == "close"
                assert await asyncio.wait_for(reader.read(), 3) == b""
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    finally:
        await backend.stop()
