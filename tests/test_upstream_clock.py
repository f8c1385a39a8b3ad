"""An answer the gateway gives when a timer, not bytes, ends the wait (the deadline
sweeper's idle timeout, a connect timeout): the data plane's shared clock is read at socket
events only, and the answer was stamped with the last one's time. (From a hostile review
of the data plane; each failed before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import RawServer, black_hole, hang_app
from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def _no_port() -> Iterator[None]:
    yield None


async def _body_then_kept_alive(reader: asyncio.StreamReader, head: bytes) -> bool:
    """Reads the answer's body; whether the connection is still open 0.3 s later (well
    inside keepalive_timeout after the answer)."""
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await asyncio.wait_for(reader.readexactly(length), 5)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    return not reader.at_eof()


async def _duration_sums(session: ClientSession, admin: str) -> list[tuple[dict[str, str], float]]:
    """The `_sum` samples of killgate_request_duration_seconds: (labels, value)."""
    async with session.get(admin + "/metrics") as r:
        text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return [(s.labels, s.value) for s in fams["killgate_request_duration_seconds"].samples
            if s.name.endswith("_sum")]


class _ClosesLate(RawServer):
    """Reads a request, and closes the connection 0.7 s later without an answer (a backend
    that crashed while it worked)."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.7)  # (past keepalive_timeout, within the idle timeout)


@pytest.mark.parametrize("how, status", [("idle", 504), ("connect", 504), ("closed", 502)])
async def test_a_timeout_answer_is_timed_and_its_connection_kept_alive(
        tmp_path: Path, backends, session: ClientSession, how: str, status: int) -> None:
    """A backend that hangs (idle timeout, 800 ms: the sweeper fails it), a host that is
    gone (connect timeout, 400 ms per version), or a backend that closes the connection
    after 0.7 s without an answer: on a gateway with no other traffic the answer was
    recorded in killgate_request_duration_seconds as taking a fraction of a millisecond
    (the request's arrival was the last socket event), so timeouts vanished from the
    latency histograms and their p99 alerts; and the kept-alive client connection's
    keepalive_timeout (600 ms) was counted from that arrival too, so it was closed as soon
    as the answer was written."""
    closes = _ClosesLate() if how == "closed" else None
    with (black_hole() if how == "connect" else _no_port()) as hole:
        if closes is not None:
            port = await closes.start()
        else:
            port = hole if hole is not None else await backends(hang_app())
        routes = two_versions(port, port, 100, 0,
                              extra="timeouts: {connect: 400ms, total: 10s, idle: 800ms}\n")
        cfg = write_config(tmp_path, routes, extra="server: {keepalive_timeout: 600ms}\n")
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                writer.write(b"GET /v2/models/iris/x HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                took = loop.time() - t0
                assert head.startswith(b"HTTP/1.1 %d " % status), head
                assert b"connection: close" not in head.lower()
                # kept alive: still open well inside keepalive_timeout after the answer
                assert await _body_then_kept_alive(reader, head), "closed at once after the answer"
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                if closes is not None:
                    await closes.stop()
            sums = await _duration_sums(session, g.admin)
    recorded = sum(value for _, value in sums)
    assert recorded >= took - 0.1, (recorded, took)


async def test_an_answer_a_kill_cuts_short_is_timed_and_kept_alive(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The same for a request waiting on its backend that a kill (abort_inflight) answers
    503: the kill comes from the state sync, not from a data-plane socket, and the 503
    was stamped with the request's arrival time (recorded as ~0 s; its kept-alive
    connection's keepalive_timeout already spent, so closed at once)."""
    from aiohttp import web

    from tests.test_killswitch import auth

    async def slow(req: web.Request) -> web.Response:
        await req.read()
        if req.path.endswith("/slow"):
            await asyncio.sleep(5)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", slow)
    port = await backends(app)
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       extra="server: {keepalive_timeout: 600ms}\n")
    async with running_gateway(cfg) as g:
        async with session.post(g.url + "/v2/models/iris/warm", data=b"{}") as r:
            assert r.status == 200  # a pooled connection: the next request is fast path
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            writer.write(b"POST /v2/models/iris/slow HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
            await asyncio.sleep(1.0)  # waiting on its backend, past keepalive_timeout
            async with session.post(f"{g.admin}/v1/kill", headers=auth(),
                                    json={"scope": "route", "route": "iris",
                                          "reason": "t"}) as r:
                assert r.status == 200
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            took = loop.time() - t0
            assert head.startswith(b"HTTP/1.1 503 "), head
            assert await _body_then_kept_alive(reader, head), "closed at once after the 503"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        sums = await _duration_sums(session, g.admin)
    killed = [value for labels, value in sums if labels.get("decision") == "killed"]
    assert killed and killed[0] >= took - 0.1, (killed, took)


async def test_a_body_that_stalls_is_timed_by_its_408(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A chunked body that stops coming gets 408 at `body_timeout` (the connection's timer
    ends the wait): it was recorded as taking as long as its last body bytes took to
    arrive, a fraction of a millisecond, not the 500 ms it waited."""
    port = await backends(hang_app())
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       extra="server: {body_timeout: 500ms}\n")
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            writer.write(b"POST /v2/models/iris/x HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            took = loop.time() - t0
            assert head.startswith(b"HTTP/1.1 408 "), head
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        sums = await _duration_sums(session, g.admin)
    recorded = sum(value for _, value in sums)
    assert recorded >= took - 0.1, (recorded, took)
