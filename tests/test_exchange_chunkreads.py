"""dataplane/exchange.py without sockets: where a read of a chunked answer ends decides how
it is counted. A read that ends inside a chunk header (its size and extensions) or the
trailer section is counted against MAX_ANSWER_HEAD (`Exchange._open_trailer`); a read of a
chunk's data is body (`AnswerParsing.on_body` ends the section a chunk header or a chunk's
end began): both sides of that line are proven here."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dataplane.answerparsing import MAX_ANSWER_HEAD
from gateway.errors import UpstreamProtocolError
from tests.test_upstream import exchange, read_all

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("piece", [1024, 4096])
async def test_a_large_chunk_read_after_its_header_is_body_not_a_chunk_header(
        piece: int) -> None:
    """The first read ends right after a chunk's size line; its 128 KiB of data come in
    later reads, none with a chunk header in it. They are body (counted as such), not a
    chunk header over 64 KiB."""
    ex, _ = exchange()
    await asyncio.wait_for(ex.send(b"GET / HTTP/1.1\r\n\r\n", None), 5)
    data = bytes(range(256)) * 512  # 128 KiB: more than MAX_ANSWER_HEAD, under HIGH_WATER
    assert len(data) > MAX_ANSWER_HEAD
    ex.data_received(HEAD + b"%x\r\n" % len(data))
    for i in range(0, len(data), piece):
        ex.data_received(data[i:i + piece])
    ex.data_received(b"\r\n0\r\n\r\n")
    assert ex.error is None
    await asyncio.wait_for(ex.read_head(), 5)
    assert await asyncio.wait_for(read_all(ex), 5) == data
    assert ex.complete and ex.body_total == len(data)


async def test_reads_inside_a_chunk_extension_after_data_are_counted() -> None:
    """A read brings a chunk's data, its end and the start of the next chunk header; the
    reads after it are wholly inside that header's extension. They are counted as a chunk
    header (failing past MAX_ANSWER_HEAD), not taken for the data that came before them."""
    ex, _ = exchange()
    await asyncio.wait_for(ex.send(b"GET / HTTP/1.1\r\n\r\n", None), 5)
    ex.data_received(HEAD + b"5\r\nhello\r\n6;x=")
    assert ex.error is None
    for _ in range(MAX_ANSWER_HEAD // 4096 + 2):
        ex.data_received(b"a" * 4096)
        if ex.error is not None:
            break
    assert isinstance(ex.error, UpstreamProtocolError)
    assert "a chunk header or the trailer section" in str(ex.error)
