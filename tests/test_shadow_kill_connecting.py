"""A shadow copy still connecting when its version is killed is not sent once connected
(README: a killed shadow receives nothing), whether or not the kill cuts what is in flight.
(Hostile shadow review: the mirror checked the kills when the client's answer was complete
and then not again: a copy that waited for its connection, a shadow whose accept queue is
full, the usual state of one an operator kills, reached it after the kill, as requests did
before dff7e49.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import kill
from tests.test_shadow import route, settled

pytestmark = pytest.mark.timeout(40)


class _FullShadow:
    """A shadow whose accept queue is full (backlog 0, one connection queued): a copy's
    connect waits on SYN retransmits until `open()`, after which every request is
    answered and counted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port))
        self.requests = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        self.tasks.add(asyncio.create_task(self._accept()))

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            self.tasks.add(asyncio.create_task(self._serve(conn)))

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        data = b""
        with conn:
            while b"\r\n\r\n" not in data:
                more = await loop.sock_recv(conn, 65536)
                if not more:
                    return
                data += more
            self.requests += 1
            await loop.sock_sendall(conn, b"HTTP/1.1 200 OK\r\ncontent-type: application/json"
                                          b"\r\ncontent-length: 2\r\n\r\n{}")

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        self.filler.close()
        self.sock.close()


async def test_a_copy_connecting_when_its_shadow_is_killed_is_not_sent(
        tmp_path: Path, backends) -> None:
    shadow = _FullShadow()
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, route(
        p1, shadow.port, "{version: v2, sample: 1.0, compare: json, "
                         "timeouts: {connect: 8s, total: 10s}}", protocol="http", prefix="/v1"))
    try:
        async with running_gateway(cfg) as g, ClientSession() as session:
            async with session.post(g.url + "/v1/x", data=b"{}") as r:
                assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
            await wait_until(lambda: g.gw.mirror.inflight.get("iris") == 1, 5)
            await kill(session, g.admin, scope="version", route="iris", version="v2",
                       abort_inflight=False)
            shadow.open()  # the copy's next SYN gets through (about 1 s after the first)
            got = await settled(session, g.admin, 1, "ended", timeout=15)
            assert shadow.requests == 0, "the killed shadow got the copy once it connected"
            assert got["compared"] == 0 and got["failures"] == {"killed": 1}, got
    finally:
        await shadow.close()


@pytest.mark.parametrize("after", ["{version: v2, sample: 0.0, compare: json, "
                                   "timeouts: {connect: 8s, total: 10s}}", "null",
                                   "{version: v2, sample: 1.0, compare: json, "
                                   "timeouts: {connect: 8s, total: 10s}, "
                                   "drop_headers: [authorization]}"],
                         ids=["sample_zero", "removed", "drop_headers_added"])
async def test_a_copy_connecting_when_a_reload_stops_the_copies_is_not_sent(
        tmp_path: Path, backends, after: str) -> None:
    """The same wait for a connection, ended by a reload that stops the copies (`sample: 0`,
    the shadow removed: a shadow that must no longer see customers' requests): the copy was
    sent once connected, up to the shadow's connect timeout after the reload (found by
    hostile shadow review, sixth pass: the reload was checked when the answer was tapped
    and when the copy started, not once it had its connection). It is counted as a
    failure of its own kind, `stopped`, which the gate does not count. A reload that adds
    to `shadow.drop_headers` (an operator keeping the clients' credentials from the shadow
    at last) stops it too: the copy was sent with the header the reload now drops (found by
    hostile review of revshadow6: `stopped` did not look at drop_headers)."""
    shadow = _FullShadow()
    p1 = await backends(echo_app("v1"))
    sh = "{version: v2, sample: 1.0, compare: json, timeouts: {connect: 8s, total: 10s}}"
    cfg = write_config(tmp_path, route(p1, shadow.port, sh, protocol="http", prefix="/v1"))
    try:
        async with running_gateway(cfg) as g, ClientSession() as session:
            mirror = g.gw.mirror
            async with session.post(g.url + "/v1/x", data=b"{}",
                                    headers={"authorization": "Bearer sk-live-1"}) as r:
                assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
            await wait_until(lambda: mirror.inflight.get("iris") == 1, 5)
            old = g.gw.loaded.digest
            cfg.write_text(write_config(tmp_path, route(p1, shadow.port, after,
                                                        protocol="http", prefix="/v1"),
                                        name="next.yaml").read_text())
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.digest != old, 10)
            shadow.open()  # the copy's next SYN gets through (about 1 s after the first)
            await wait_until(lambda: not mirror._tasks, 15, what="the copy's end")
            assert shadow.requests == 0, "the copy went out after the reload stopped it"
            if after != "null":  # (the same settings: the counts say what became of it)
                got = await settled(session, g.admin, 1, "ended", timeout=5)
                assert got["compared"] == 0 and got["failures"] == {"stopped": 1}, got
    finally:
        await shadow.close()
