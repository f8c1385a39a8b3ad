"""RELIABILITY row 35: a body of a million 1-byte chunks (aiohttp CVE-2025-69229's shape).

It is forwarded (it is within `max_body_size`) without the gateway stalling: another client
is answered promptly meanwhile, and the backend receives every byte; past the limit, the
same flood is cut with 413.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, two_versions, write_config

N = 1_000_000


async def _flood(port: int, n: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        block = b"1\r\nx\r\n" * 10_000
        for _ in range(n // 10_000):
            writer.write(block)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()


async def test_a_million_one_byte_chunks(tmp_path: Path, backends, session) -> None:
    rec = Recorder()
    p = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        flood = asyncio.ensure_future(_flood(port, N))
        worst = 0.0
        while not flood.done():  # the gateway keeps serving others meanwhile
            t0 = time.monotonic()
            async with session.get(g.url + "/v2/models/iris/ping") as r:
                assert r.status == 200
            worst = max(worst, time.monotonic() - t0)
            await asyncio.sleep(0.05)
        assert (await flood).startswith(b"HTTP/1.1 200"), flood.result()
        assert worst < 2.0, worst  # served throughout (the flood lasts seconds)
        posts = [r for r in rec.requests if r["method"] == "POST"]
        assert len(posts) == 1 and posts[0]["body"] == b"x" * N


async def test_chunk_flood_past_the_limit_is_413(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra="server:\n  max_body_size: 100000\n")
    async with running_gateway(cfg) as g:
        status = await _flood(g.gw.data_addr[1], 200_000)
        assert status.split()[1] == b"413", status
