"""`body_min_rate` over an answer's whole holdup, not each pause of it (dataplane/flow.py,
deadlines.py; admin/listener.py for the admin port).

The rate was judged from each `pause_writing` to its `resume_writing`, with a new grace of
`send_timeout` each time: a client taking the ~48 KiB that end a pause a little faster than
the grace allows, again and again, was never cut, at about half `body_min_rate` (~450 B/s
at the defaults: 1024 B/s after 60 s). The holdups of one answer now add up: its client
must average `body_min_rate` over all the time it held the answer up, after one grace. An
honest bursty reader (all it can take at once, then a gap shorter than `send_timeout`)
averages far more and is never cut. Scaled down: `send_timeout` 0.4 s, the rate 100 KB/s,
real sockets with small buffers, a real in-process gateway and backend.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.slowreader import big_app, slow_reader

pytestmark = pytest.mark.timeout(30)

SIZE = 1_500_000
RATE = 100_000  # bytes/s: body_min_rate
SERVER = f"server: {{send_timeout: 400ms, body_min_rate: {RATE}}}\n"
RCVBUF = 16384  # the client's receive buffer (small: what it takes, the gateway sees)


async def _take(sock: socket.socket, chunk: int, every: float, until: float) -> tuple[int, bool]:
    """Read `chunk` bytes every `every` seconds (as far as there are) for `until` seconds:
    (bytes read, whether the gateway cut the connection)."""
    got, t0 = 0, time.monotonic()
    next_at = t0
    while time.monotonic() - t0 < until:
        next_at += every
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        want = chunk
        while want > 0:
            try:
                data = sock.recv(want)
            except BlockingIOError:
                break
            except ConnectionError:
                return got, True
            if not data:
                return got, got < SIZE
            got += len(data)
            want -= len(data)
    return got, False


def _cut(g) -> int:  # type: ignore[no-untyped-def]
    return int(g.gw.metrics.get("killgate_client_send_timeouts_total") or 0)


async def test_a_reader_below_the_rate_is_cut_across_pauses(tmp_path: Path, backends) -> None:
    """~70 KB/s against a rate of 100 KB/s: each pause took ~0.7 s, within the 0.4 s + 0.5 s
    a pause allowed on its own; over the whole answer it is below the rate: cut."""
    port = await backends(big_app(SIZE))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=SERVER)
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, RCVBUF)
        try:
            got, cut = await _take(sock, 7000, 0.1, 2.6)
        finally:
            sock.close()
        counted = _cut(g)
    assert cut and counted == 1, (got, cut, counted)


def _streamed() -> web.Application:
    """A chunked answer written as it comes (the data plane streams it: streaming.py)."""
    async def stream(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for _ in range(SIZE // 16384):
            await resp.write(b"y" * 16384)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", stream)
    return app


async def test_a_streamed_answer_read_below_the_rate_is_cut(tmp_path: Path, backends) -> None:
    """A streamed answer (streaming.py: each wait for the client a pause of its own) to a
    reader at ~80 KB/s: each pause, ~84 KB, within what it allowed on its own."""
    port = await backends(_streamed())
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=SERVER)
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, RCVBUF)
        try:
            got, cut = await _take(sock, 8000, 0.1, 2.8)
        finally:
            sock.close()
        counted = _cut(g)
    assert cut and counted == 1, (got, cut, counted)


async def test_a_bursty_reader_above_the_rate_is_not_cut(tmp_path: Path, backends) -> None:
    """32 KiB at once every 0.15 s (gaps within `send_timeout`), ~220 KB/s on average."""
    port = await backends(big_app(SIZE))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0), extra=SERVER)
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, 1 << 16)  # (its socket holds a burst's worth)
        try:
            got, cut = await _take(sock, 32768, 0.15, 2.4)
        finally:
            sock.close()
        counted = _cut(g)
    assert not cut and counted == 0 and got > 300_000, (got, cut, counted)


async def _admin_backed_up(g, rcvbuf: int) -> socket.socket:  # type: ignore[no-untyped-def]
    """An admin connection with small buffers both ends that asked for 200 answers."""
    server = g.gw._admin_runner.server
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", g.gw.admin_addr[1]))
    await wait_until(lambda: server.open_connections() == 1, 5, what="the admin accept")
    for c in server._connections:  # (the answers wait in its transport, not its socket)
        c.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                        4096)
    await loop.sock_sendall(sock, b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            * 200)
    await wait_until(lambda: all(c.writing_paused for c in server._connections), 10, 0.02,
                     what="the answers backed up")
    return sock


async def test_the_admin_port_judges_the_rate_across_pauses(tmp_path: Path, backends) -> None:
    """The admin listener's `send_min_rate` (the same `body_min_rate`) had the same gap: a
    client that asked for 200 answers and takes them at ~70 KB/s against a rate of 100 KB/s
    is cut; one taking them in bursts above the rate is not."""
    from tests.backends import echo_app

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=SERVER)
    async with running_gateway(cfg) as g:
        server = g.gw._admin_runner.server

        def cut() -> float:
            return float(g.gw.metrics.get("killgate_admin_refused_total", ("timeout",)) or 0)

        sock = await _admin_backed_up(g, 16384)
        try:
            got, _ = await _take(sock, 7000, 0.1, 2.6)
        finally:
            sock.close()
        assert cut() == 1, got
        await wait_until(lambda: server.open_connections() == 0, 5, what="it gone")
        sock = await _admin_backed_up(g, 1 << 16)
        try:
            got, _ = await _take(sock, 32768, 0.15, 2.0)
            assert cut() == 1 and server.open_connections() == 1, got
        finally:
            sock.close()


async def _fast_then(sock: socket.socket, fast: int) -> None:
    """Read `fast` bytes of the answer as fast as they come."""
    loop, got = asyncio.get_running_loop(), 0
    while got < fast:
        data = await asyncio.wait_for(loop.sock_recv(sock, min(65536, fast - got)), 5)
        assert data, got
        got += len(data)


async def test_a_fast_start_banks_no_more_than_one_send_timeout(tmp_path: Path,
                                                                 backends) -> None:
    """Found by review (revmerge16): the rate over all the holdups carried every second a
    fast start earned: 1.2 MB taken at once against 200 KB/s banked 6 s, then ~70 KB/s held
    the answer that long (a slow-read attack after one fast burst: with a big answer,
    minutes). The credit carried is now at most one `send_timeout`: cut within ~2 s."""
    port = await backends(big_app(SIZE))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       extra=SERVER.replace(str(RATE), str(2 * RATE)))
    async with running_gateway(cfg) as g:
        sock = await slow_reader(g, RCVBUF)  # (small buffers: what it takes, the gateway sees taken)
        try:
            await _fast_then(sock, 1_200_000)
            got, cut = await _take(sock, 7000, 0.1, 2.6)
        finally:
            sock.close()
        counted = _cut(g)
    assert cut and counted == 1, (got, cut, counted)


async def test_the_admin_port_banks_no_more_than_one_send_timeout(tmp_path: Path,
                                                                  backends) -> None:
    """The admin listener's `_kg_carried`, as the data plane's: 200 answers backed up, most
    of them taken at once, then ~70 KB/s against 200 KB/s: cut within ~2 s."""
    from tests.backends import echo_app

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra=SERVER.replace(str(RATE), str(2 * RATE)))
    async with running_gateway(cfg) as g:
        server = g.gw._admin_runner.server

        def cut() -> float:
            return float(g.gw.metrics.get("killgate_admin_refused_total", ("timeout",)) or 0)

        sock = await _admin_backed_up(g, 16384)
        try:
            await _fast_then(sock, 1_200_000)
            got, _ = await _take(sock, 7000, 0.1, 2.6)
        finally:
            sock.close()
        assert cut() == 1, got
        await wait_until(lambda: server.open_connections() == 0, 5, what="it gone")
