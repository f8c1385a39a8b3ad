"""Backend failure handling, from a hostile review (revfailover): passive ejection and the
versions that can serve, deadlines across failover. Each failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.backends import Recorder, black_hole, echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"
FALLBACK = "fallback: {status: 503, json: {busy: true}}\n"


async def test_the_last_version_left_by_a_kill_is_never_ejected(tmp_path: Path,
                                                                 backends) -> None:
    """README: "Passive ejection never removes the last version that can serve." v1 is
    killed; v2, the only version left, answers 5xx. It used to be ejected all the same (a
    killed v1 counted as serving), and the route then answered 503 `unavailable` for 30 s
    even once v2 recovered. Expected: v2 keeps serving (its 5xx are forwarded)."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2", status=503))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50,
                                              "outlier: {consecutive_5xx: 2}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        await kill(session, g.admin, scope="version", route="iris", version="v1")
        await wait_until(lambda: g.gw.holder.table.by_name["iris"].excluded.get("v1")
                         == "killed")
        seen = []
        for _ in range(6):
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
                seen.append((r.status, r.headers.get("x-killgate-version"),
                             r.headers.get("x-killgate-decision")))
        assert [s[:2] for s in seen] == [(503, "v2")] * 6, seen
        assert ("iris", "v2") not in g.gw.holder.unhealthy


async def test_the_last_version_beside_a_shadow_is_never_ejected(tmp_path: Path,
                                                                 backends) -> None:
    """A route with one serving version and a shadow: the shadow never answers a client,
    so it is not a version that can serve; the serving version answering 5xx used to be
    ejected, leaving the route with nothing (503 `unavailable`)."""
    p1 = await backends(echo_app("v1", status=503))
    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0,
                                              "outlier: {consecutive_5xx: 2}\n"
                                              "shadow: {version: v2}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        seen = []
        for _ in range(6):
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
                seen.append((r.status, r.headers.get("x-killgate-version")))
        assert seen == [(503, "v1")] * 6, seen


@pytest.mark.parametrize("fallback", [False, True])
async def test_no_attempt_goes_out_after_the_total_deadline(tmp_path: Path, backends,
                                                            fallback: bool) -> None:
    """`timeouts.total` bounds the whole exchange, failover included. v1 is black-holed
    (its accept queue is full: SYNs go unanswered) and its connect timeout (600 ms) uses up
    the route's total (600 ms; connect <= total is allowed). The request then went to v2
    anyway, past its deadline, and was answered 504 a sweep later: v2 acted on a request
    whose client was told it timed out. Expected: a 504 at about the total (the route's
    fallback, when it has one: no version could serve in time), and nothing sent to v2
    once the deadline has passed."""
    got: list[float] = []

    async def slow(req: web.Request) -> web.Response:  # v2 acts, then answers 100 ms later
        got.append(time.monotonic())
        await asyncio.sleep(0.1)
        return web.json_response({"done": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    p2 = await backends(app)
    with black_hole() as port:
        cfg = write_config(tmp_path, two_versions(port, p2, 100, 0,
                                                  "timeouts: {connect: 600ms, total: 600ms}\n"
                                                  "outlier: {enabled: false}\n"
                                                  + (FALLBACK if fallback else "")))
        async with running_gateway(cfg) as g, ClientSession() as session:
            t0 = time.monotonic()
            async with session.post(g.url + INFER, data=b"{}") as r:
                body = await r.json()
                took = time.monotonic() - t0
                if fallback:
                    assert (r.status, body) == (503, {"busy": True})
                    assert r.headers["x-killgate-decision"] == "fallback"
                else:
                    assert r.status == 504, (r.status, body)
                    assert body["error"]["type"] == "upstream_timeout"
            assert not got, "v2 got (and acted on) a request its client was answered 504 for"
            assert took < 0.95, took


async def test_the_wait_for_a_connection_ends_by_the_total_deadline(tmp_path: Path) -> None:
    """Both versions black-holed, connect 800 ms, total 1 s: the second version's connect
    wait was a full 800 ms (the answer came at 1.6 s, a 504 "connect timeout"); it is cut
    at the total deadline instead (a 504 at about 1 s), and a wait cut short so is not
    counted against that version's health (v1's full connect timeout is)."""
    with black_hole() as port:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0,
                                                  "timeouts: {connect: 800ms, total: 1s}\n"))
        async with running_gateway(cfg) as g, ClientSession() as session:
            t0 = time.monotonic()
            async with session.post(g.url + INFER, data=b"{}") as r:
                body = await r.json()
                took = time.monotonic() - t0
                assert r.status == 504, (r.status, body)
            assert 0.95 < took < 1.4, took
            records = g.gw.health.records
            assert records["iris", "v1"].gateway_fail_streak == 1
            assert records["iris", "v2"].gateway_fail_streak == 0


async def test_a_body_that_outlasts_the_total_deadline_is_408_and_never_sent(
        tmp_path: Path, backends) -> None:
    """README: "a streamed request body still arriving from the client at `total` is
    answered 408 (not counted against the backend)". A small chunked body is read whole
    before its first attempt (so that it can move versions); one dripping in past the
    route's total was then sent to the backend all the same, already past its deadline,
    and answered 504 (the backend's fault, by the count) or served late. Expected: 408,
    and the backend never sees it."""
    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0,
                                              "timeouts: {connect: 300ms, total: 600ms}\n"))
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            writer.write(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            head = b""
            for _ in range(5):  # 1 s in all: past the total (600 ms)
                writer.write(b"1\r\nx\r\n")
                with contextlib.suppress(TimeoutError):  # (answered at the total, and
                    # closed without a linger: a client too slow for it is not read on)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.2)
                    break
            else:
                writer.write(b"0\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert not rec.requests
