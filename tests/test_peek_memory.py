"""Request bodies held to read their `model` have a total bound (`server.model_peek_memory`).

Stop 31 measured it unbounded: a request whose `model` routes it keeps up to
`model_peek_bytes` of its body (1 MiB; up to 64 MiB) from the peek to its end, and
`max_inflight` (10,000) of them could hold 10 GiB (+197 MiB for 200 stalled 1 MB bodies).
Each now counts what it holds of its body against the budget (up to model_peek_bytes), as
it arrives; beyond it a fast 503 `overloaded` with Retry-After, counted as shed; what it
held is given back when the request ends, however it ends."""

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


SENT = len(BODY) - 30  # (a request held back: all of its body but the last 30 bytes)


async def _start(port: int, sent: int = SENT) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose head and first `sent` bytes are sent, the rest held back."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:sent])
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
        # (CPython 3.11 keeps up to 30 attributes in a shared-key table; past it every
        # attribute read on the request path is slower: +2,000 instructions a request when
        # this budget was three attributes of the proxy: RESULTS §27)
        assert len(vars(proxy)) <= 30, sorted(vars(proxy))
        held = [await _start(port) for _ in range(16)]  # each holds almost its window
        await wait_until(lambda: proxy.peeks.held == 16 * SENT, 10, what="16 bodies held")
        r, w = await _start(port)  # the 17th: refused at once, nothing held for it
        status, head = await _status(r)
        assert status == 503 and b"retry-after: 1" in head.lower(), head
        assert b'"overloaded"' in await asyncio.wait_for(r.read(), 10)
        w.close()
        assert g.gw.metrics.get("killgate_requests_shed_total") == 1
        assert proxy.peeks.held == 16 * SENT
        # one body finished: answered, its reservation given back, room for another
        r0, w0 = held.pop(0)
        w0.write(BODY[SENT:])
        assert (await _status(r0))[0] == 200
        w0.close()
        await wait_until(lambda: proxy.peeks.held == 15 * SENT, 10, what="one given back")
        held.append(await _start(port))
        await wait_until(lambda: proxy.peeks.held == 16 * SENT, 10, what="taken again")
        # clients that leave mid-body give theirs back too
        for _, w in held[:8]:
            w.close()
        await wait_until(lambda: proxy.peeks.held == 8 * SENT, 10, what="eight given back")
        for r, w in held[8:]:
            w.write(BODY[SENT:])
            assert (await _status(r))[0] == 200
            w.close()
        await wait_until(lambda: proxy.peeks.held == 0 and not proxy.peeks.by, 10,
                         what="nothing held")
        assert len(small.requests) == 9 and not other.requests
        assert g.gw.metrics.get("killgate_requests_shed_total") == 1


async def test_clients_that_send_little_do_not_spend_the_budget(tmp_path: Path,
                                                                backends) -> None:
    """(hostile review of 43f9b96) Each request reserved its whole window at its head,
    before any of its body came: a few clients sending a head and a few bytes each, then
    trickling within body_timeout, spent the budget (model_peek_memory / model_peek_bytes of
    them: 512 at the defaults, 8 at a 64 MiB window) and every other large-body request
    routed by its model got 503 for as long as they kept at it, though almost nothing was
    held. The budget now counts the bytes held, as they arrive."""
    small, other = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("small", small)), await backends(echo_app("other", other))
    cfg = write_config(tmp_path, MODEL_ROUTES.format(p1=p1, p2=p2),
                       extra=f"server: {{model_peek_bytes: {WINDOW}, "
                             f"model_peek_memory: {8 * WINDOW}}}\n")
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        proxy = g.gw.proxy
        assert proxy is not None
        slow = [await _start(port, 30) for _ in range(8)]  # 30 bytes each, the rest held back
        await wait_until(lambda: len(proxy.peeks.by) == 8, 10, what="eight peeking")
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
            assert (await _status(r))[0] == 200
            w.close()
            assert g.gw.metrics.get("killgate_requests_shed_total") == 0
        finally:
            for _, w in slow:
                w.close()
        await wait_until(lambda: proxy.peeks.held == 0 and not proxy.peeks.by, 10,
                         what="nothing held")
