"""Request bodies held to read their `model` have a total bound (`server.model_peek_memory`).

Stop 31 measured it unbounded: a request whose `model` routes it keeps up to
`model_peek_bytes` of its body (1 MiB; up to 64 MiB) from the peek to its end, and
`max_inflight` (10,000) of them could hold 10 GiB (+197 MiB for 200 stalled 1 MB bodies).
Each now reserves min(Content-Length, model_peek_bytes) of the budget; beyond it a fast 503
`overloaded` with Retry-After, counted as shed; the reservation is given back when the
request ends, however it ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_proxy_confusion import MODEL_ROUTES

pytestmark = pytest.mark.timeout(60)

WINDOW = 128 * 1024  # (beyond SMALL_BODY: a smaller body is read whole before it is routed)
_SHELL = len(json.dumps({"model": "chat-small", "pad": ""}))
BODY = json.dumps({"model": "chat-small", "pad": "x" * (WINDOW - _SHELL)}).encode()
assert len(BODY) == WINDOW  # (all of it in the window: the whole body reserved)


async def _start(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose head and first bytes are sent, the rest held back."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:30])
    await w.drain()
    return r, w


async def _status(r: asyncio.StreamReader) -> tuple[int, bytes]:
    line = await asyncio.wait_for(r.readline(), 10)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    return int(line.split()[1]), head


async def test_bodies_read_for_their_model_are_held_within_the_budget(
        tmp_path: Path, backends) -> None:
    small, other = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("small", small)), await backends(echo_app("other", other))
    cfg = write_config(tmp_path, MODEL_ROUTES.format(p1=p1, p2=p2),
                       extra=f"server: {{model_peek_bytes: {WINDOW}, "
                             f"model_peek_memory: {16 * WINDOW}}}\n")
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        proxy = g.gw.proxy
        assert proxy is not None
        held = [await _start(port) for _ in range(16)]  # each reserves the whole window
        await wait_until(lambda: proxy.peek_held == 16 * WINDOW, 10, what="16 reservations")
        r, w = await _start(port)  # the 17th: refused at once, nothing held for it
        status, head = await _status(r)
        assert status == 503 and b"retry-after: 1" in head.lower(), head
        assert b'"overloaded"' in await asyncio.wait_for(r.read(), 10)
        w.close()
        assert g.gw.metrics.get("killgate_requests_shed_total") == 1
        assert proxy.peek_held == 16 * WINDOW
        # one body finished: answered, its reservation given back, room for another
        r0, w0 = held.pop(0)
        w0.write(BODY[30:])
        assert (await _status(r0))[0] == 200
        w0.close()
        await wait_until(lambda: proxy.peek_held == 15 * WINDOW, 10, what="one given back")
        held.append(await _start(port))
        await wait_until(lambda: proxy.peek_held == 16 * WINDOW, 10, what="taken again")
        # clients that leave mid-body give theirs back too
        for _, w in held[:8]:
            w.close()
        await wait_until(lambda: proxy.peek_held == 8 * WINDOW, 10, what="eight given back")
        for r, w in held[8:]:
            w.write(BODY[30:])
            assert (await _status(r))[0] == 200
            w.close()
        await wait_until(lambda: proxy.peek_held == 0 and not proxy.peeking, 10,
                         what="nothing held")
        assert len(small.requests) == 9 and not other.requests
        assert g.gw.metrics.get("killgate_requests_shed_total") == 1
