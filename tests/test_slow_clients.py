"""A hostile or careless client against a real gateway (seventh hostile review): slow
bodies and slow readers against the route's total timeout, and HTTP/1.0's Expect."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.backends import StreamingBackend
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import exchange, request

pytestmark = pytest.mark.timeout(60)


async def test_a_slow_body_does_not_hold_a_backend_connection_past_the_total_timeout(
        tmp_path: Path, backends) -> None:
    """A body over 64 KiB streams to the backend as it arrives, on a backend connection
    taken at once. `timeouts.total` is "the whole exchange (504)" (README), but the sweeper
    that enforces it only sees an exchange while it waits on the backend: while `send`
    waits for the client's next body bytes, no deadline applies but `body_timeout`, which
    is per pause. A client that sends a byte now and then (R-U-D-Y, RELIABILITY row 37)
    holds a backend connection for as long as it likes: `max_connections_per_backend` of
    them shut every other client out of that backend (503 overloaded). Expected: the
    exchange ends at `total`, and the connection comes free."""
    from tests.backends import echo_app
    port = await backends(echo_app("v1"))
    routes = two_versions(port, port, 100, 0, extra="timeouts: {connect: 500ms, total: 1s}\n")
    cfg = write_config(tmp_path, routes, extra="server:\n  max_connections_per_backend: 2\n")
    async with running_gateway(cfg) as g:
        gport = g.gw.data_addr[1]
        writers = []
        for _ in range(2):  # two slow uploads take both backend connections
            r, w = await asyncio.open_connection("127.0.0.1", gport)
            w.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100000\r\n\r\nx")
            writers.append((r, w))
        loop = asyncio.get_running_loop()
        until = loop.time() + 4.0  # four times the route's total timeout
        try:
            slow = [b"", b""]
            while loop.time() < until:
                for i, (r, w) in enumerate(writers):
                    with contextlib.suppress(TimeoutError, ConnectionError):
                        slow[i] += await asyncio.wait_for(r.read(4096), 0.01)
                    if not slow[i]:  # (nothing more once answered: the gateway closed)
                        w.write(b"x")  # a byte now and then: well within body_timeout
                await asyncio.sleep(0.2)
            status, _, body = await exchange(
                gport, request("POST", "/v2/models/iris/infer", b"{}"), timeout=5)
        finally:
            for _, w in writers:
                w.close()
    assert status == 200, (f"a request 4 s after two slow uploads began (total timeout 1s) "
                           f"got {status} {body[:120]!r}: they still hold the backend")
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in slow), slow  # the client's delay


async def _status(port: int, payload: bytes) -> tuple[int, bytes]:
    """The status (and head) of the answer to `payload`, its body left unread."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(payload)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        return int(head.split(b" ", 2)[1]), head
    finally:
        w.close()


def big_answer(size: int) -> StreamingBackend:
    """A backend answering with `size` bytes (Content-Length), as fast as the gateway takes
    them."""
    return StreamingBackend(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size,
                            b"y" * 65536, size)


async def test_a_slow_reader_does_not_hold_a_backend_connection_past_the_total_timeout(
        tmp_path: Path) -> None:
    """The answer side of the same: while a streamed answer waits for the client to take
    what it was sent (`req.drain`), no deadline applies but `send_timeout`, which a client
    resets with every small read. A client that reads fast has its stream cut at
    `timeouts.total` (the sweeper, in `read`); one that reads a little now and then (a
    slow-read attack, RELIABILITY row 37) holds a backend connection as long as it likes.
    Expected: the stream is cut at `total` either way, and the connection comes free."""
    backend = big_answer(256 * 1024 * 1024)
    port = await backend.start()
    routes = two_versions(port, port, 100, 0, extra="timeouts: {connect: 500ms, total: 1s}\n")
    cfg = write_config(tmp_path, routes, extra="server:\n  max_connections_per_backend: 2\n")
    try:
        async with running_gateway(cfg) as g:
            gport = g.gw.data_addr[1]
            readers = []
            for _ in range(2):  # two slow readers take both backend connections
                r, w = await asyncio.open_connection("127.0.0.1", gport, limit=4096)
                w.write(b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n\r\n")
                readers.append((r, w))
            loop = asyncio.get_running_loop()
            until = loop.time() + 4.0  # four times the route's total timeout
            try:
                while loop.time() < until:
                    for r, _ in readers:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(r.read(4096), 0.05)
                    await asyncio.sleep(0.2)
                status, head = await _status(gport, request("GET", "/v2/models/iris/infer"))
                cut = g.gw.metrics.get("killgate_client_send_timeouts_total")
            finally:
                for _, w in readers:
                    w.close()
    finally:
        await backend.stop()
    assert status == 200, (f"a request 4 s after two slow readers began (total timeout 1s) "
                           f"got {head!r}: they still hold the backend")
    assert cut == 2, cut  # each slow reader counted as dropped for reading too slowly


async def test_an_http10_request_expecting_100_continue_never_gets_one(
        tmp_path: Path, backends) -> None:
    """RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0
    request (1.0 has no interim answers: its client reads "HTTP/1.1 100 Continue" as the
    answer, and what follows as its body). The gateway sends one when it first reads the
    body (`Request._more`), whatever the request's version. Expected: no 100; the answer."""
    from tests.backends import echo_app
    port = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(port, port, 100, 0))) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            w.write(b"POST /v2/models/iris/infer HTTP/1.0\r\nHost: x\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            with contextlib.suppress(TimeoutError):
                early = await asyncio.wait_for(r.read(100), 0.5)
                assert not early.startswith(b"HTTP/1.1 100"), early
            w.write(b"{}")
            answer = await asyncio.wait_for(r.read(), 5)
        finally:
            w.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
