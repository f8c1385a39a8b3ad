"""The admin listener's connection cap against someone who holds every slot
(admin/listener.py): an operator's kill must still get through.

Anyone who reaches the admin port can open `admin.max_connections` connections without a
token and hold them: idle until the header deadline (then open new ones), kept alive
with a `GET /healthz` now and then, or asking for answers it never reads. When the cap
refused every new connection, such a client locked the operator out of the kill switch."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config

CAP = 20


async def _hold(port: int, keep_alive: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """One connection that holds a slot: idle (nothing sent), or after a served /healthz."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if keep_alive:
        w.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(r.readexactly(length), 5)
    return r, w


async def test_a_kill_gets_through_while_others_hold_every_connection(tmp_path: Path,
                                                                     backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("  auth:\n", f"  max_connections: {CAP}\n  auth:\n",
                                           1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        server = g.gw._admin_runner.server
        held = [await _hold(port, keep_alive=i % 2 == 0) for i in range(CAP)]
        await wait_until(lambda: server.open_connections() == CAP, 5, what="every slot held")
        async with ClientSession() as s:
            for scope in ("global", "route"):
                body = {"scope": scope, "reason": "slots held"} | (
                    {"route": "iris"} if scope == "route" else {})
                async with s.post(g.admin + "/v1/kill", json=body,
                                  headers=bearer("killgate:kill", "oncall")) as r:
                    assert r.status == 200, await r.text()
                # the holder takes its slot back at once (a new connection)
                held.append(await _hold(port, keep_alive=True))
        assert set(g.gw.holder.doc.kills) == {"global", "route:iris"}
        # a slot is made for a newcomer by closing the longest-held idle connection,
        # never one with a request in progress, and counted like a refused one
        assert g.gw.metrics.get("killgate_admin_refused_total", ("connections",)) >= 2
        assert server.open_connections() <= CAP
        for _, w in held:
            w.close()


async def _stall(port: int) -> asyncio.StreamWriter:
    """A connection whose client reads nothing: pipelined document requests until the
    answers back up (the server's writes wait for a reader that never comes)."""
    _, w = await asyncio.open_connection("127.0.0.1", port)
    w.transport.set_write_buffer_limits(high=1 << 30)  # (never wait on our own sends)
    w.write(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n" * 400)
    return w


async def test_a_kill_gets_through_while_others_read_nothing_on_every_connection(
        tmp_path: Path, backends) -> None:
    """A client that asks and never reads holds a request in progress for as long as it
    likes (no write deadline): the holder of every slot needs no idle connection."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("  auth:\n", f"  max_connections: {CAP}\n  auth:\n",
                                           1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        server = g.gw._admin_runner.server
        held = [await _stall(port) for _ in range(CAP)]
        await wait_until(lambda: server.open_connections() == CAP and all(
            c.writing_paused for c in server._connections), 10, 0.05,
            what="every slot held by a stalled answer")
        async with ClientSession() as s, s.post(
                g.admin + "/v1/kill", json={"scope": "global", "reason": "x"},
                headers=bearer("killgate:kill", "oncall")) as r:
            assert r.status == 200, await r.text()
        assert "global" in g.gw.holder.doc.kills
        for w in held:
            w.transport.abort()


async def test_an_answer_nobody_reads_is_cut_off_at_the_send_deadline(tmp_path: Path,
                                                                      backends) -> None:
    """Without a deadline, such a connection stayed open (and its answers in memory) for
    as long as its client kept it: even the gateway's shutdown left its socket behind."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="server: {send_timeout: 1s}\n")
    async with running_gateway(cfg) as g:
        server = g.gw._admin_runner.server
        held = [await _stall(g.gw.admin_addr[1]) for _ in range(3)]
        await wait_until(lambda: server.open_connections() == 3 and all(
            c.writing_paused for c in server._connections), 10, 0.05,
            what="three stalled answers")
        await wait_until(lambda: server.open_connections() == 0, 5, 0.05,
                         what="the stalled connections to be cut off")
        assert g.gw.metrics.get("killgate_admin_refused_total", ("timeout",)) == 3
        for w in held:
            w.transport.abort()


async def test_a_kill_gets_through_while_others_pipeline_on_every_connection(
        tmp_path: Path, backends) -> None:
    """A client that sends its requests ahead of the answers (pipelining: no CLI, console
    or Alertmanager does) and reads the answers keeps a request in progress, and more
    queued, on every connection for as long as its backlog lasts."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("  auth:\n", f"  max_connections: {CAP}\n  auth:\n",
                                           1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        server = g.gw._admin_runner.server
        held: list[asyncio.StreamWriter] = []
        readers: list[asyncio.Task[None]] = []

        async def drain(r: asyncio.StreamReader) -> None:
            while await r.read(65536):
                pass

        for _ in range(CAP):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" * 5000)
            held.append(w)
            readers.append(asyncio.create_task(drain(r)))
        await wait_until(lambda: server.open_connections() == CAP and all(
            c._request_count - c._kg_handled > 1 for c in server._connections), 10, 0.01,
            what="every slot with a backlog")
        try:
            async with ClientSession() as s, s.post(
                    g.admin + "/v1/kill", json={"scope": "global", "reason": "x"},
                    headers=bearer("killgate:kill", "oncall")) as r:
                assert r.status == 200, await r.text()
            assert "global" in g.gw.holder.doc.kills
        finally:
            for w in held:
                w.transport.abort()
            await asyncio.gather(*readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def _backed_up(g: Any) -> AsyncIterator[socket.socket]:
    """A client socket with a small receive buffer that asked the admin listener for 200
    answers and read none yet: the listener's writes are paused when it is handed over."""
    server = g.gw._admin_runner.server
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", g.gw.admin_addr[1]))
        await loop.sock_sendall(sock, b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n"
                                * 200)
        await wait_until(lambda: server.open_connections() == 1 and all(
            c.writing_paused for c in server._connections), 10, 0.02,
            what="the answers backed up")
        yield sock
    finally:
        sock.close()


async def test_an_answer_read_slowly_but_steadily_is_not_cut_off(tmp_path: Path,
                                                                backends) -> None:
    """The send deadline ran from the first full buffer to its draining: a client reading
    its answers steadily, more slowly than the buffer's high-to-low water mark per
    `send_timeout` (a console on a slow link), was cut off while it read. Any progress now
    gives it another `send_timeout`, as nginx's does; once it stops reading, it is cut."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="server: {send_timeout: 0.5s}\n")
    async with running_gateway(cfg) as g, _backed_up(g) as sock:
        server = g.gw._admin_runner.server
        loop = asyncio.get_running_loop()
        got = 0
        for _ in range(40):  # 2 s, four send_timeouts: ~8 KiB every 50 ms
            got += len(await asyncio.wait_for(loop.sock_recv(sock, 8192), 2))
            await asyncio.sleep(0.05)  # (the slow reader's pace, not a synchronisation)
        assert server.open_connections() == 1, got
        assert g.gw.metrics.get("killgate_admin_refused_total", ("timeout",)) == 0
        # stopped reading: cut off
        await wait_until(lambda: server.open_connections() == 0, 5, 0.05,
                         what="the stalled connection to be cut off")
        assert g.gw.metrics.get("killgate_admin_refused_total", ("timeout",)) == 1


async def test_an_answer_read_below_the_min_rate_is_cut_off(tmp_path: Path, backends) -> None:
    """A client taking a little of its answers at every look (a slow-read attack: a byte a
    minute would do) kept its connection, and the answers it asked for in memory, for as
    long as it liked once any progress reset the send deadline; the data port cuts such a
    client once it averages less than `server.body_min_rate` after `send_timeout` of grace
    (the README: "as on the data port"), and the admin port now does too."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="server: {send_timeout: 0.5s, body_min_rate: 1048576}\n")
    async with running_gateway(cfg) as g, _backed_up(g) as sock:
        server = g.gw._admin_runner.server
        loop = asyncio.get_running_loop()

        async def slow() -> None:  # ~160 KiB/s, as the steady reader above: below the rate
            while True:
                try:
                    if not await loop.sock_recv(sock, 8192):
                        return
                except ConnectionError:
                    return
                await asyncio.sleep(0.05)  # (the slow reader's pace)

        reader = asyncio.create_task(slow())
        try:
            await wait_until(lambda: server.open_connections() == 0, 5, 0.05,
                             what="the slow reader to be cut off")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        assert g.gw.metrics.get("killgate_admin_refused_total", ("timeout",)) == 1
