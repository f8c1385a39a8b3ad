"""A request body whose start is read before it is sent (chunked, or after 100-continue),
trickled by its client: the route's total timeout holds while it is read. (From a hostile
review of the data plane; it failed before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
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


async def test_a_trickled_body_a_model_route_must_peek_is_408(tmp_path: Path, backends) -> None:
    """The same trickle on a request a route matched by the body's `model` could match:
    the body is peeked (up to `model_peek_bytes`, 1 MiB) before any route is chosen, so
    no route's total applied at all, and the request held its max_inflight slot for as
    long as its client cared to trickle. Expected: 408 by the longest total timeout of
    the routes (no route is chosen yet), nothing sent."""
    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    routes = textwrap.dedent(f"""\
        - name: chat
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          timeouts: {{total: 1s}}
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        - name: other
          match: {{path_prefix: /v1}}
          stable: v1
          timeouts: {{connect: 200ms, total: 500ms}}
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """)
    async with running_gateway(write_config(tmp_path, routes)) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = b""
        try:
            while loop.time() - t0 < 4.0 and b"\r\n\r\n{" not in got:  # 4 x the longest total
                writer.write(b"1\r\n \r\n")  # whitespace, a byte at a time
                with contextlib.suppress(TimeoutError, ConnectionError):
                    got += await asyncio.wait_for(reader.read(65536), 0.25)
            took = loop.time() - t0
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert got.startswith(b"HTTP/1.1 408 "), (round(took, 2), got[:200])
        assert took < 2.0, took
        assert g.gw.inflight.count == 0
    assert rec.requests == []
