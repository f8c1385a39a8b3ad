"""`server.send_timeout` over real sockets: a client whose socket stays full (the
transport's buffer past its high-water mark) is judged by its progress, as nginx's
`send_timeout` ("between two successive write operations"), and by a minimum rate (the
`body_min_rate` of request bodies, for the answer): a steady slow reader is not cut, one that
stalls is cut at `send_timeout`, one that takes a few bytes a look (a slow-read attack) is
cut once it is below the rate. The gateway's socket gets a small send buffer so that the
answer waits in its transport, not in the kernel."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.slowreader import big_app, slow_reader

pytestmark = pytest.mark.timeout(20)

SIZE = 120_000  # the answer: about 100 KB of it waits in the transport
SEND_TIMEOUT = 0.4  # two reads of the slow-read client in each look's window
RCVBUF = 4096  # the client's receive buffer: a few reads of it per look


def _server(min_rate: int = 1024) -> str:
    return f"server: {{send_timeout: {int(SEND_TIMEOUT * 1000)}ms, body_min_rate: {min_rate}}}\n"


async def _read(sock: socket.socket, n: int, wait: float) -> bytes | None:
    """Up to `n` bytes after `wait` seconds: b"" at the end, None if nothing was there."""
    await asyncio.sleep(wait)
    try:
        return sock.recv(n)
    except BlockingIOError:
        return None
    except ConnectionError:
        return b""


def _cut(g) -> int:  # type: ignore[no-untyped-def]
    return int(g.gw.metrics.get("killgate_client_send_timeouts_total") or 0)


async def test_a_steady_slow_reader_is_not_cut(tmp_path: Path, backends) -> None:
    """A client taking its answer at ~100 KB/s (a read every 40 ms): far above
    `body_min_rate`, but its transport's buffer stays past the low-water mark for many `send_timeout`s.
    Before the fix it was cut `send_timeout` after the buffer filled (the timer ran from
    `pause_writing` to `resume_writing`, whatever the client took meanwhile)."""
    port = await backends(big_app(SIZE))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=_server())
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, RCVBUF)
        got = b""
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 2.5:
                data = await _read(sock, 65536, 0.04)
                if data == b"":
                    break
                got += data or b""
        finally:
            sock.close()
        cut = _cut(g)
    head, _, body = got.partition(b"\r\n\r\n")
    assert cut == 0 and len(body) == SIZE, (
        f"a client reading steadily was cut: {len(body)} of {SIZE} bytes, after "
        f"{time.monotonic() - t0:.2f}s, send timeouts {cut}")
    assert head.startswith(b"HTTP/1.1 200 ")


async def test_a_steady_slow_reader_of_what_the_kernel_holds_is_not_cut(tmp_path: Path,
                                                                        backends) -> None:
    """With the socket's own send buffer (megabytes, as on a fast link), an answer of 8 MB
    fills it and then the transport's: a client reading steadily empties the kernel's queue,
    and the transport's buffer does not move until half of it is free. Judged by the
    transport's buffer alone, that client was cut at the first look; its progress is now
    read from the socket's send queue too (SIOCOUTQ)."""
    size = 8 << 20

    async def big(req: web.Request) -> web.Response:
        return web.Response(body=b"y" * size)

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", big)
    port = await backends(app)
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=_server())
    async with running_gateway(cfg) as g:
        listener = g.gw._listener
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, g.gw.data_addr)
        sock.send(b"GET /v2/models/iris/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await wait_until(lambda: any(c.write_paused for c in listener.connections), 5,
                         what="the socket's queue and then the transport's buffer to fill")
        got = 0
        try:
            for _ in range(40):  # 1.6 s, four looks: ~16 KB a look
                data = await _read(sock, 65536, 0.04)
                assert data != b"", f"cut after {got} bytes"
                got += len(data or b"")
            cut = _cut(g)
        finally:
            sock.close()
    assert cut == 0 and got > 0, (cut, got)


async def test_a_reader_that_stalls_is_cut_at_send_timeout(tmp_path: Path, backends) -> None:
    """The same client stops reading part way: dropped about `send_timeout` after its last
    read (at the first look that finds no progress), and counted."""
    port = await backends(big_app(SIZE))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=_server())
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, RCVBUF)
        try:
            for _ in range(5):  # progress first: 20 KB
                await _read(sock, 4096, 0.04)
            stalled = time.monotonic()
            await wait_until(lambda: _cut(g), 3, 0.01, "the stalled reader to be dropped")
            took = time.monotonic() - stalled
        finally:
            sock.close()
    assert SEND_TIMEOUT * 0.8 <= took <= 2 * SEND_TIMEOUT + 0.3, took


async def test_a_reader_below_the_min_rate_is_cut(tmp_path: Path, backends,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A slow-read attack, scaled: what its socket holds (6 KB) every 200 ms, ~30 KB/s (a
    byte a minute at the defaults), progress at every look, so `send_timeout` alone never
    ends it, and the connection with the answer's bytes is held for as long as the client
    likes. Below `body_min_rate` (60 KB/s here) once `send_timeout` has passed: dropped,
    counted, and logged once. (A read of less than what the socket holds may reopen no
    window: the gateway would see no progress.)"""
    caplog.set_level(logging.INFO, "killgate")
    port = await backends(big_app(SIZE))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=_server(60_000))
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, RCVBUF)
        t0 = time.monotonic()
        try:
            while not _cut(g) and time.monotonic() - t0 < 2.5:
                if await _read(sock, 65536, 0.2) == b"":
                    break
            took = time.monotonic() - t0
            cut = _cut(g)
        finally:
            sock.close()
    slow = [r for r in caplog.records if r.getMessage() == "answer_taken_too_slowly"]
    assert cut == 1 and len(slow) == 1, (cut, took, [r.getMessage() for r in caplog.records])
    assert took <= 5 * SEND_TIMEOUT, took
