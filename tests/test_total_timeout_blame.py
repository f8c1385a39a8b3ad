"""Eighth hostile review: review 7's total deadline while a streamed request body is sent
(awaiting.py: `ClientTimeout`, answered 408 and never counted against the backend) also
fires when it is the *backend* that does not take the body: the `timeout_at` timer runs
exactly at the deadline, the pool's sweeper up to `SWEEP` (10 ms) after it, so the timer
wins and a stuck backend is blamed on the client."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)


class TakesNoBody:
    """A backend that reads a request's head and then nothing more (stuck)."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.done = asyncio.Event()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            await self.done.wait()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=1024)
        sock = self.server.sockets[0]
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        self.done.set()
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


async def test_a_backend_that_takes_no_body_is_a_504_not_the_clients_408(
        tmp_path: Path) -> None:
    backend = TakesNoBody()
    port = await backend.start()
    routes = two_versions(port, port, 100, 0,
                          extra="timeouts: {connect: 500ms, total: 1s, idle: 10s}\n")
    size = 9 * 1024 * 1024  # (under max_body_size) more than the sockets between gateway and backend hold
    try:
        async with running_gateway(write_config(tmp_path, routes)) as g:
            r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            w.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % size)

            async def upload() -> None:  # as fast as the gateway takes it
                block = b"x" * 65536
                with contextlib.suppress(ConnectionError):
                    for _ in range(size // len(block)):
                        w.write(block)
                        await w.drain()

            sending = asyncio.create_task(upload())
            try:
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            finally:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
                w.close()
            status = int(head.split(b" ", 2)[1])
            assert status == 504, (
                f"the backend took none of the body, the client sent as fast as it could: "
                f"{head!r}")
    finally:
        await backend.stop()


async def test_a_body_too_slow_for_the_total_timeout_gets_its_408_and_no_linger(
        tmp_path: Path, backends) -> None:
    """closing.py: "A client too slow for the body deadline gets no linger" (a trickle
    would hold its connection `linger_time` more, 30 s by default). Review 7's 408 at the
    route's total timeout is for the same client (R-U-D-Y), and lingers: the trickle holds
    the connection until `linger_time`."""
    from tests.backends import echo_app
    port = await backends(echo_app("v1"))
    routes = two_versions(port, port, 100, 0, extra="timeouts: {connect: 500ms, total: 1s}\n")
    async with running_gateway(write_config(tmp_path, routes)) as g:
        lst = g.gw._listener
        assert lst is not None
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        loop = asyncio.get_running_loop()
        try:
            w.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100000\r\n\r\nx")
            got = b""
            end = loop.time() + 10
            while b"\r\n\r\n" not in got:  # a byte every 0.2 s, well within body_timeout
                assert loop.time() < end, got
                with contextlib.suppress(TimeoutError):
                    got += await asyncio.wait_for(r.read(4096), 0.2)
                w.write(b"x")
            assert got.startswith(b"HTTP/1.1 408 "), got
            answered = loop.time()
            while lst.connections and loop.time() < answered + 2:  # the trickle goes on
                with contextlib.suppress(ConnectionError):
                    w.write(b"x")
                await asyncio.sleep(0.2)
            assert not lst.connections, "still lingering 2 s after the 408"
        finally:
            w.close()
