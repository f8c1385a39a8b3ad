"""A kill applied after a request was routed and before it went out (its body still
arriving, waiting for a connection, failing over, its shadow copy, a body peeked for its
`model`): the request never reaches what was killed. (From a hostile review; each failed
before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


CHUNKED_REST = b"2\r\n1}\r\n0\r\n\r\n"


def chunked_start(path: bytes) -> bytes:
    """A chunked request's head and first chunk (its body is then still arriving)."""
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n")


async def kill_in_flight(g: Any, session: ClientSession, **kill_body: Any) -> None:
    """Once one request is in flight at gateway `g`, the kill `kill_body`."""
    await wait_until(lambda: g.gw.inflight.count == 1)
    await kill(session, g.admin, **kill_body)


async def in_two_parts(url: str, first: bytes, between: Callable[[], Awaitable[None]],
                       rest: bytes) -> bytes:
    """Send `first`, run `between` (a kill), send `rest`; the answer, read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    try:
        writer.write(first)
        await writer.drain()
        await between()
        writer.write(rest)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_request_routed_before_a_version_kill_is_not_sent_to_it_after(
        tmp_path: Path, backends) -> None:
    """A request routed to v2 whose body is still arriving (chunked: the slow path reads
    its first 64 KiB before any attempt) has no `version` on its flight yet, so a version
    kill with abort_inflight does not cut it; once its body was in, it used to be sent to
    the killed v2. Expected: failover to v1 (or 503 killed), never v2 after its kill."""
    r1, r2 = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", r1)), await backends(echo_app("v2", r2))
    cfg = write_config(tmp_path, two_versions(p1, p2, 0, 100))
    async with running_gateway(cfg) as g, ClientSession() as session:
        answer = await in_two_parts(
            g.url, chunked_start(b"/v2/models/iris/infer"),
            lambda: kill_in_flight(g, session, scope="version", route="iris", version="v2"),
            CHUNKED_REST)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-killgate-version: v2" not in head and not r2.requests, (
        f"v2 was killed, then got the request and served it: {head.decode()}")


@pytest.mark.parametrize("scope", ["global", "route"])
async def test_a_model_routed_request_peeking_its_body_during_a_kill_is_not_forwarded(
        tmp_path: Path, backends, scope: str) -> None:
    """A route matched by the body's `model` whose body is not in yet (chunked, or over
    64 KiB) is routed once the peek has read it, but against the routing table read when
    its head arrived (proxy.py `handle`: `table = self.holder.held.table`, handed to
    `_peek`). A global or route kill applied meanwhile was not seen (no flight exists yet
    for abort_inflight to cut, and the old table's plan is not killed): the request was
    forwarded to the killed route's backend after the kill's receipt. Expected: 503 killed."""
    import textwrap

    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    routes = textwrap.dedent(f"""\
        - name: chat
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """)
    cfg = write_config(tmp_path, routes)
    kill_body = {"scope": scope, "reason": "bad model"}
    if scope == "route":
        kill_body["route"] = "chat"
    async with running_gateway(cfg) as g, ClientSession() as session:
        async def between() -> None:
            # the head is in, counted in flight, and the peek waits for the rest
            await wait_until(lambda: g.gw.inflight.count == 1 and g.gw.proxy._tasks)
            await kill(session, g.admin, **kill_body)

        first, rest = b'{"model": "gpt-a", ', b'"messages": []}'
        answer = await in_two_parts(
            g.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(first), first), between,
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 503 " in status_line and not rec.requests, (
        f"killed ({scope}) before the body was in, then forwarded: {status_line!r}, "
        f"backend got {len(rec.requests)} request(s)")


async def test_a_request_failing_over_after_a_version_kill_does_not_move_to_the_killed_version(
        tmp_path: Path, backends) -> None:
    """The same root cause on the failover side: a flight keeps the plan of the table it was
    routed on, and its failover order (`plan.failover_for`) with it. A request waiting in
    v1's queue (v1's one connection busy) when v2 is killed times out of the queue and
    moves to v2, the version killed meanwhile, which served it. Now: 503 (no version
    left), never the killed v2."""
    from tests.backends import hang_app

    r2 = Recorder()
    p1, p2 = await backends(hang_app()), await backends(echo_app("v2", r2))
    extra = "timeouts: {connect: 500ms, total: 10s}\n"
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0, extra=extra),
                       extra="server: {max_connections_per_backend: 1}\n")
    async with running_gateway(cfg) as g, ClientSession() as session:
        url = g.url + "/v2/models/iris/infer"
        holder = asyncio.create_task(session.get(url))  # takes v1's only connection, hangs
        await wait_until(lambda: g.gw.inflight.count == 1)
        waiter = asyncio.create_task(session.get(url))  # queued for v1
        await wait_until(lambda: g.gw.inflight.count == 2)
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        resp = await asyncio.wait_for(waiter, 10)
        version = resp.headers.get("x-killgate-version")
        status = resp.status
        resp.release()
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
    # 503 killed, labelled with the version it would have moved to; v2 never reached
    assert status == 503 and not r2.requests, (
        f"v2 was killed while the request queued for v1; it then moved to v2: {status} "
        f"from {version}")


async def test_a_shadow_copy_is_not_sent_to_a_version_killed_while_the_primary_answered(
        tmp_path: Path, backends) -> None:
    """The shadow copy of a request is sent once the primary's answer is whole, to the shadow
    version of the plan the request was routed on (shadow.py `_copy`: `tap.plan.shadow`).
    A version kill of the shadow version while the primary answered was not seen: the copy
    reached the killed version after the kill's receipt. Expected: no copy (counted
    "down", as a tap made after the kill is)."""
    from tests.shadow_backends import chat_app, chat_request
    from tests.test_shadow import route

    r2 = Recorder()
    p1 = await backends(chat_app("v1", delay=1.0))
    p2 = await backends(chat_app("v2", recorder=r2))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, compare: openai_chat}",
                                       protocol="openai", prefix="/v1"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        call = asyncio.create_task(session.post(g.url + "/v1/chat/completions",
                                                data=chat_request(1),
                                                headers={"content-type": "application/json"}))
        await kill_in_flight(g, session, scope="version", route="iris", version="v2")
        killed_at = len(r2.requests)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: len(r2.requests) > killed_at, timeout=2)
    assert len(r2.requests) == killed_at, "the killed shadow version got a copy after its kill"


async def test_a_retry_after_a_5xx_does_not_move_to_a_version_killed_meanwhile(
        tmp_path: Path, backends) -> None:
    """The fast path's side: a request sent to v2 on a pooled connection, which answers 503
    after a while; the route retries 5xx on the next version, v1, killed (without cutting
    requests in flight) while v2 took its time. The retry is not sent to v1: 503 killed."""
    from aiohttp import web

    r1 = Recorder()

    async def slow_503(request: web.Request) -> web.Response:
        await request.read()
        if request.headers.get("x-slow"):
            await asyncio.sleep(1.0)
        return web.json_response({"version": "v2"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow_503)
    p1, p2 = await backends(echo_app("v1", r1)), await backends(app)
    extra = "retry: {retry_on: ['5xx'], attempts: 2, budget: 1}\n"
    cfg = write_config(tmp_path, two_versions(p1, p2, 0, 100, extra=extra))
    async with running_gateway(cfg) as g, ClientSession() as session:
        url = g.url + "/v2/models/iris/infer"
        async with session.post(url, data=b"{}") as warm:  # v2's pooled connection (its
            assert warm.status == 200  # 503 retried on v1)
        call = asyncio.create_task(session.post(url, data=b"{}", headers={"x-slow": "1"}))
        await kill_in_flight(g, session, scope="version", route="iris", version="v1",
                   abort_inflight=False)
        killed_at = len(r1.requests)
        resp = await asyncio.wait_for(call, 10)
        status, body = resp.status, await resp.json()
        resp.release()
    assert len(r1.requests) == killed_at, "the retry reached v1 after its kill"
    assert status == 503 and body["error"]["type"] == "killed", body
