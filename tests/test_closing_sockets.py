"""Eighth hostile review of the lingering close (gateway/dataplane/closing.py), through real
sockets on a real listener: a lingering connection must end, whatever its client does."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.request import Request
from tests.test_protocol import Recorder

pytestmark = pytest.mark.timeout(60)

LIMITS = Limits(header_timeout=5, keepalive_timeout=5, body_timeout=5, send_timeout=1,
                linger_timeout=0.2, linger_time=0.6)
BIG = 16 * 1024 * 1024  # an answer more than the socket buffers hold


class EarlyBigAnswer(Recorder):
    """Answers each request at its head, before its body is read, with a large body (what
    the gateway writes when a backend answers a streamed upload early)."""

    def handle(self, req: Request) -> None:
        self.seen.append(req)
        req.respond(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                    % BIG + b"x" * BIG)


#: seconds: a run's own bound, under the module's timeout. pytest-timeout's signal method
#: (pyproject) never ends a test whose uvloop loop hangs: uvloop runs a Python signal handler
#: from a callback of its own and swallows what it raises (logged as 'Exception in
#: callback'), so a hang here hung the whole run
DEADLINE = 45.0


def run(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), DEADLINE))


def test_a_run_that_hangs_on_uvloop_fails_within_its_bound() -> None:
    """A check that hangs on uvloop fails (TimeoutError) rather than hang the test run:
    pytest-timeout's SIGALRM is swallowed by uvloop (it hung past any timeout before)."""
    code = ("import asyncio, tests.test_closing_sockets as m; m.DEADLINE = 0.3\n"
            "async def hang() -> None: await asyncio.Event().wait()\n"
            "m.run('uvloop', hang)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=10)
    assert res.returncode == 1 and "TimeoutError" in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_lingering_client_that_ends_its_side_and_reads_nothing_is_let_go(
        loop_kind: str) -> None:
    """The client sends a head and part of a large body, our answer is given before the
    body is read (the connection lingers: our side ended once the answer is sent), and the
    client ends its side (shutdown SHUT_WR) without reading a byte. `eof_received` returns
    False, so the transport closes, which waits for the unsent answer to be taken, for
    ever: `_lingered` sees `is_closing()` and returns without a timer, and the send
    deadline's `_tick` returns at once on `closed`. The connection stays counted against
    `max_connections` (and the per-client cap) for good."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lst = Listener(EarlyBigAnswer(), LIMITS, 10)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        await lst.start(srv, 16)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, srv.getsockname())
            await loop.sock_sendall(client, b"POST /u HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 1000000\r\n\r\n" + b"b" * 1000)
            end = loop.time() + 5
            while not any(getattr(c, "lingering", False) for c in lst.connections):
                assert loop.time() < end, "never lingered"
                await asyncio.sleep(0.01)
            (conn,) = lst.connections
            assert conn.transport.get_write_buffer_size() > 0  # (our answer, not taken)
            client.shutdown(socket.SHUT_WR)  # the client's end; it reads nothing
            end = loop.time() + LIMITS.linger_time + LIMITS.send_timeout + 3
            while lst.connections:
                assert loop.time() < end, (
                    f"still open {end - loop.time() + 0:.1f}s before the end of the check: "
                    f"lingering={conn.lingering} closing={conn.transport.is_closing()} "
                    f"unsent={conn.transport.get_write_buffer_size()}")
                await asyncio.sleep(0.02)
        finally:
            client.close()
            for c in list(lst.connections):
                c.abort()
            await lst.shutdown(1)

    run(loop_kind, main)
