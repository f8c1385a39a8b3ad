"""Making room at `server.max_connections` (listener.py `Listener.full`, deadlines.py
`Deadlines._slow_body`): a small body whose first bytes are still on the way (one round
trip after its head: a client that writes the head and the body apart) is a request in
progress, not a body trickling in behind its pace."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(30)


async def test_a_body_not_started_yet_keeps_its_place_at_the_cap(tmp_path: Path,
                                                                 backends) -> None:
    """At the cap (2), one connection idle between requests and one whose small body's head
    has come, its body not yet (a round trip later): a new client used to take the place of
    the request in progress, whose body counted as behind its pace the moment after its
    head (0 bytes of 10 against any time waited), its deadline (head + body_timeout) sooner
    than the idle one's (keepalive_timeout): its request was lost, an idle connection kept.
    Now a body gets a grace (min(1 s, body_timeout / 4)) before its pace is judged: the idle
    connection gives way, and the request is answered."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra="server: {max_connections: 2, body_timeout: 30s, "
                             "keepalive_timeout: 60s}\n")
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        listener = g.gw._listener
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        idle_w.write(b"GET /v2/models/iris/idle HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(idle_r, 5))[0] == 200  # then idle, kept alive
        body_r, body_w = await asyncio.open_connection("127.0.0.1", port)
        body_w.write(b"POST /v2/models/iris/body HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 10\r\n\r\n")  # its body: a round trip later
        await wait_until(lambda: len(listener.connections) == 2 and any(
            c.queue for c in listener.connections), 5, what="the head")  # type: ignore[attr-defined]
        new_r, new_w = await asyncio.open_connection("127.0.0.1", port)
        try:
            new_w.write(b"GET /v2/models/iris/new HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = await read_answer(new_r, 5)
            assert status == 200
            assert g.gw.metrics.get("killgate_connections_reclaimed_total") == 1
            with contextlib.suppress(ConnectionError):  # the idle one gave way
                assert await asyncio.wait_for(idle_r.read(), 5) == b""
            body_w.write(b"0123456789")
            status, _, body = await read_answer(body_r, 5)
            assert status == 200 and b'"path": "/v2/models/iris/body"' in body, (status, body)
        finally:
            for w in (idle_w, body_w, new_w):
                w.close()
