"""A request body whose start is read before it is sent (chunked, or after 100-continue),
trickled by its client: the route's total timeout holds while it is read. (From a hostile
review of the data plane; it failed before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

HEADS = {
    "chunked": (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\na\r\n"),
    "100-continue": (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n", b"a"),
}


@pytest.mark.parametrize("kind", list(HEADS))
async def test_a_trickled_body_start_is_408_at_the_total_timeout(
        tmp_path: Path, backends, kind: str) -> None:
    """README: "`total` holds whichever side is slow: a streamed request body still
    arriving from the client at `total` is answered 408". A chunked body (or one sent after
    100-continue) has its first 64 KiB read before the request goes out, and that read had
    no deadline but `body_timeout`, which is per pause: a client sending a byte now and then
    held the request, and its slot of `server.max_inflight` (10,000 such clients and every
    other request is shed with 503), for as long as 64 KiB took, days; the 408 came only
    once they were in. Expected: 408 at `total`, nothing sent to the backend."""
    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    routes = two_versions(port, port, 100, 0, extra="timeouts: {total: 1s}\n")
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        head, piece = HEADS[kind]
        writer.write(head)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = b""
        try:
            while loop.time() - t0 < 4.0 and b"\r\n\r\n{" not in got:  # 4 x total
                writer.write(piece)  # well within body_timeout (30 s)
                with contextlib.suppress(TimeoutError, ConnectionError):
                    got += await asyncio.wait_for(reader.read(65536), 0.25)
            took = loop.time() - t0
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        got = got.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"")
        assert got.startswith(b"HTTP/1.1 408 "), (round(took, 2), got[:200])
        assert took < 2.0, took
        assert g.gw.inflight.count == 0
    assert [r for r in rec.requests if r["method"] == "POST"] == []
