"""An event stream with a Content-Encoding (a gzip-flushing backend): its bytes are not
events, so they are neither cut on "blank lines" found in compressed bytes nor held back,
and a failure aborts the connection rather than write a plain-text `killgate.error` event
into a compressed body (review 9)."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest

from tests.backends import RawServer
from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(20)

_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
         b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class GzipEvents(RawServer):
    """Writes one gzip-flushed event, then waits for `go` before the next (or, with `die`,
    resets the connection)."""

    def __init__(self, die: bool = False) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.die = die
        self.z = zlib.compressobj(wbits=31)  # gzip

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        z = self.z
        first = z.compress(b"data: one\n\n") + z.flush(zlib.Z_SYNC_FLUSH)
        writer.write(_HEAD + _chunk(first))
        await writer.drain()
        await self.go.wait()
        if self.die:
            writer.transport.abort()
            return
        last = z.compress(b"data: two\n\n") + z.flush()
        writer.write(_chunk(last) + b"0\r\n\r\n")
        await writer.drain()


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /s/x HTTP/1.1\r\nHost: g\r\n\r\n")
    await r.readuntil(b"\r\n\r\n")  # the head
    return r, w


def _config(tmp_path: Path, port: int) -> Path:
    return write_config(tmp_path, f"""\
- name: s
  match: {{path_prefix: /s}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
""")


async def _body(reader: asyncio.StreamReader) -> bytes:
    """The de-chunked body until its end or the connection's."""
    out = b""
    while True:
        size = await reader.readline()
        if not size:
            return out
        n = int(size.strip(), 16)
        data = await reader.readexactly(n + 2)
        if n == 0:
            return out
        out += data[:-2]


async def test_a_compressed_event_stream_is_forwarded_as_it_comes(tmp_path: Path) -> None:
    """Before: the gzip bytes of the first event were held back as "an incomplete event"
    (no blank line in them) until 256 KiB or the stream's end: the client got nothing."""
    backend = GzipEvents()
    port = await backend.start()
    try:
        async with running_gateway(_config(tmp_path, port)) as g:
            reader, writer = await _open(g.gw.data_addr[1])
            try:
                size = await asyncio.wait_for(reader.readline(), 2)  # the first chunk, now
                first = await reader.readexactly(int(size.strip(), 16) + 2)
                backend.go.set()
                rest = first[:-2] + await asyncio.wait_for(_body(reader), 5)
                assert zlib.decompress(rest, wbits=31) == b"data: one\n\ndata: two\n\n"
            finally:
                backend.go.set()
                writer.close()
    finally:
        await backend.stop()


async def test_a_compressed_event_stream_that_fails_is_aborted(tmp_path: Path) -> None:
    """Before: a plain-text `killgate.error` event was written into the gzip body (and the
    chunked body ended cleanly): garbage for the client's decoder, and an end that looks
    complete. Now: the connection is aborted (an incomplete chunked body)."""
    backend = GzipEvents(die=True)
    port = await backend.start()
    try:
        async with running_gateway(_config(tmp_path, port)) as g:
            reader, writer = await _open(g.gw.data_addr[1])
            try:
                backend.go.set()
                rest = await asyncio.wait_for(reader.read(), 5)
                assert b"killgate.error" not in rest and not rest.endswith(b"0\r\n\r\n"), rest
            finally:
                writer.close()
    finally:
        await backend.stop()
