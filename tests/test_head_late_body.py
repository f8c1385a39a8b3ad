"""A backend that sends a body for HEAD *later* than its head (a head flushed first, the
body when it is ready: what a streaming handler that treats HEAD as GET does) must never
have that body read as the answer to the next request on its connection, another client's
as well as the same one's. (Eighth hostile review: review 7 had every HEAD's connection
reused; now only one whose answer announces no body is.)"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.backends import RawServer
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(60)

INFER = "/v2/models/iris/infer"
INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Injected: 1\r\n\r\nevil!"


class LateBody(RawServer):
    """A keep-alive backend that answers the request `first` picks with `head`, a head
    announcing a body, and sends that body (here, bytes that read as an answer: a body it
    echoes, say) a moment later. The moment is made deterministic: the body goes once the
    next request has arrived on the connection, or after 2 s (a backend that is merely slow
    does the same on the wire). Any other request: `good`."""

    def __init__(self, first: bytes, head: bytes) -> None:
        super().__init__()
        self.first, self.head = first, head

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        while True:
            head = pending or await reader.readuntil(b"\r\n\r\n")
            pending = b""
            if head.startswith(self.first):
                writer.write(self.head)
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    pending = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
                writer.write(INJECTED)  # the (buggy) body, late
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
            await writer.drain()


async def _first_then_another_client(tmp_path: Path, backend: LateBody) -> bytes:
    """Client A sends the backend's `first` request; client B then a GET, on the connection
    A's answer may have left pooled. B must get its own answer (or a 502), never the late
    body. A's answer head."""
    port = await backend.start()
    try:
        async with running_gateway(write_config(tmp_path, two_versions(port, port, 100, 0))) as g:
            addr = g.gw.data_addr[1]
            a_reader, a_writer = await asyncio.open_connection("127.0.0.1", addr)
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", addr)
            try:
                method, path = backend.first.decode().split()
                a_writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                first = await asyncio.wait_for(a_reader.readuntil(b"\r\n\r\n"), 5)
                b_writer.write(f"GET {INFER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status, headers, body = await read_answer(b_reader)
                assert "x-injected" not in headers and body != b"evil!", (
                    f"another client's GET got the late body as its answer: "
                    f"{status} {headers} {body!r}")
                assert status == 502 or body == b"good", (status, body)
                return first
            finally:
                a_writer.close()
                b_writer.close()
    finally:
        await backend.stop()


async def test_a_late_body_after_an_answer_to_head_is_never_the_next_answer(
        tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(INJECTED)
    first = await _first_then_another_client(tmp_path, LateBody(f"HEAD {INFER}".encode(), head))
    assert first.startswith(b"HTTP/1.1 200 "), first


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n" % len(INJECTED),
    b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(INJECTED),
    b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["304-length", "204-length", "204-chunked"])
async def test_a_late_body_after_a_204_or_304_is_never_the_next_answer(
        tmp_path: Path, head: bytes) -> None:
    """A 204 or 304 has no body whatever its head says (llhttp ends it at the head), so a
    head announcing one, a body sent after it, was read as the next request's answer on the
    connection, which went back to the pool: another client's. As for HEAD (above), such a
    connection is not used again."""
    first = await _first_then_another_client(
        tmp_path, LateBody(b"GET /v2/models/iris/first", head))
    assert first.split(b" ")[1] in (b"204", b"304"), first
