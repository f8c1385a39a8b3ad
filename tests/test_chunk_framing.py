"""A chunked request body's framing (chunk sizes, extensions, CRLFs) is bounded per
request, not only per chunk header. (From a hostile review; failed before its fix.)

Each chunk header was bounded (64 KiB, f298382), but a client could send any number of
them: `1;a=<60 KB>\\r\\nx\\r\\n` again and again moves the body deadline with each byte of
body and reaches `max_body_size` only after 60,000 times its size of extensions, every
byte read and parsed by the event loop (what Node's CVE-2024-22019 fix bounds per
message). Real gateway, real backend, raw client socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(60)

INFER = "/v2/models/iris/infer"
HEAD = (b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")


async def _send(tmp_path: Path, backends, chunks: list[bytes], repeat: int
                ) -> tuple[int, bytes, int, Recorder]:
    """Send HEAD, then `chunks` `repeat` times (as long as the gateway reads), then the
    last chunk; the answer's status and body, the bytes written when it came, what the
    backend saw."""
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    sent = 0
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])

        async def write() -> None:
            nonlocal sent
            writer.write(HEAD)
            for _ in range(repeat):
                for c in chunks:
                    writer.write(c)
                    sent += len(c)
                await asyncio.wait_for(writer.drain(), 10)
            writer.write(b"0\r\n\r\n")
            await asyncio.wait_for(writer.drain(), 10)

        sender = asyncio.create_task(write())
        try:
            status, _, body = await read_answer(reader, 30)
            at_answer = sent  # (after it, a refused connection lingers: read, dropped)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
                await sender
            writer.close()
    return status, body, at_answer, rec


async def test_endless_chunk_extensions_on_tiny_chunks_are_refused(tmp_path: Path,
                                                                   backends) -> None:
    ext = b"1;a=" + b"b" * 60_000 + b"\r\nx\r\n"  # one byte of body per 60 KB header
    status, body, sent, rec = await _send(tmp_path, backends, [ext], 1000)  # 60 MB offered
    assert status == 400, (status, body)
    # (what the gateway read, and the socket buffers: a few MiB)
    assert sent < 16 * 1024 * 1024, f"the gateway read {sent >> 20} MiB of chunk extensions"
    assert not rec.requests or len(rec.requests[0]["body"]) < 200


@pytest.mark.parametrize("chunk", [
    b"1\r\nx\r\n",  # many one-byte chunks (a stream of small writes)
    b"001\r\nx\r\n",  # with leading zeros
    b"1;n=v\r\nx\r\n",  # and a small extension each
])
async def test_many_tiny_chunks_still_pass(tmp_path: Path, backends, chunk: bytes) -> None:
    status, body, _, rec = await _send(tmp_path, backends, [chunk * 100], 300)
    assert status == 200, (status, body)
    assert [len(q["body"]) for q in rec.requests] == [30_000]


async def test_signed_chunks_with_long_extensions_still_pass(tmp_path: Path,
                                                             backends) -> None:
    """aws-chunked style: an 81-byte `;chunk-signature=<64 hex>` on each 8 KiB chunk."""
    data = b"y" * 8192
    chunk = b"2000;chunk-signature=" + b"f" * 64 + b"\r\n" + data + b"\r\n"
    status, body, _, rec = await _send(tmp_path, backends, [chunk], 200)
    assert status == 200, (status, body)
    assert [len(q["body"]) for q in rec.requests] == [200 * 8192]
