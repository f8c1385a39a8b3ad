"""A route matched by path whose canary rewrites the body's `model` (a version `model`) read
the body of EVERY request before routing: a body past `model_peek_bytes` (1 MiB; the OpenAI
SDK writes `model` after the prompt), a gzip body or another charset was 400, also for the
stable that rewrites nothing (README's limitation). The version is now chosen first (the
same pure decision), and the body is read only when the chosen version rewrites it; a
request that fails over from a version that rewrites nothing to one that does has its
`model` read from the body held in memory, or is not moved there (its error says so)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import free_port, running_gateway, wait_until, write_config
from tests.test_kill_after_routing import in_two_parts
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)

BIG = {"messages": [{"role": "user", "content": "x" * (1200 * 1024)}], "model": "m1"}
SMALL = b'{"model": "m1", "messages": []}'


def route(stable: int, canary: int, extra: str = "", weights: tuple[int, int] = (100, 0),
          shadow: int | None = None) -> str:
    sh = "" if shadow is None else (
        "  shadow: {version: v3, sample: 1.0, max_request_bytes: 1048576}\n")
    v3 = "" if shadow is None else (
        f'    - {{name: v3, url: "http://127.0.0.1:{shadow}", weight: 0, model: m3-served}}\n')
    return (f"- name: chat\n"
            f"  match: {{path_prefix: /v1/chat/completions}}\n"
            f"  stable: v1\n  protocol: openai\n  allow_pin: true\n{extra}{sh}"
            f"  versions:\n"
            f'    - {{name: v1, url: "http://127.0.0.1:{stable}", weight: {weights[0]}}}\n'
            f'    - {{name: v2, url: "http://127.0.0.1:{canary}", weight: {weights[1]},'
            f" model: m2-served}}\n{v3}")


async def test_the_stable_gets_any_body_the_canary_that_rewrites_a_readable_one(
        tmp_path: Path, backends, session: ClientSession) -> None:
    v1, v2 = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", v1)), await backends(echo_app("v2", v2))
    cfg = write_config(tmp_path, route(p1, p2), extra="server: {max_body_size: 8388608}\n")
    big = json.dumps(BIG).encode()
    zipped = gzip.compress(SMALL)
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/chat/completions"
        # to the stable (weighted: all its traffic), which rewrites nothing: as it came
        for body, headers in ((big, {"content-type": "application/json"}),
                              (zipped, {"content-encoding": "gzip"}),
                              (SMALL, {"content-type": "application/json; charset=latin-1"})):
            async with session.post(url, data=io.BytesIO(body), headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["x-killgate-version"] == "v1"
            got = v1.requests[-1]
            # (aiohttp's server decodes a gzip body: its length as sent says it came whole)
            assert got["body"] == (SMALL if body is zipped else body)
            assert dict(got["headers"])["content-length"] == str(len(body))
        assert len(v1.requests) == 3 and not v2.requests
        # pinned to the canary, which rewrites: read, so each of them is the clear 400
        for body, headers, said in (
                (big, {}, "model_peek_bytes"),
                (zipped, {"content-encoding": "gzip"}, "Content-Encoding"),
                (SMALL, {"content-type": "application/json; charset=latin-1"}, "latin-1")):
            async with session.post(url, data=io.BytesIO(body),
                                    headers={**headers, "x-killgate-pin": "v2"}) as r:
                assert r.status == 400, await r.text()
                assert said in (await r.json())["error"]["message"]
        assert not v2.requests
        async with session.post(url, data=SMALL, headers={"x-killgate-pin": "v2"}) as r:
            assert r.status == 200, await r.text()
        assert json.loads(v2.requests[-1]["body"])["model"] == "m2-served"
        assert len(v1.requests) == 3
        assert g.gw.proxy is not None and not g.gw.proxy.peeks.by


async def test_a_large_body_to_the_stable_by_weight_streams_and_the_canary_share_is_kept(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """Weighted 50/50: the version is drawn once (before any read), so a body read for the
    canary goes to the canary: both versions serve."""
    v1, v2 = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", v1)), await backends(echo_app("v2", v2))
    cfg = write_config(tmp_path, route(p1, p2, weights=(50, 50)))
    body = b'{"messages": [{"content": "' + b"y" * 300_000 + b'"}], "model": "m1"}'
    async with running_gateway(cfg) as g:
        seen: dict[str, int] = {}
        for _ in range(16):
            async with session.post(g.url + "/v1/chat/completions", data=body) as r:
                assert r.status == 200, await r.text()
                seen[r.headers["x-killgate-version"]] = seen.get(
                    r.headers["x-killgate-version"], 0) + 1
        assert set(seen) == {"v1", "v2"}, seen
        assert all(rq["body"] == body for rq in v1.requests)
        assert all(json.loads(rq["body"])["model"] == "m2-served" for rq in v2.requests)


async def test_failover_from_the_stable_to_a_canary_that_rewrites(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The stable refuses connections: a body held in memory moves to the canary with its
    `model` rewritten; a gzip body, or one that streamed (past what is held), is not moved
    to a version that would get its `model` as the client sent it: the error says why."""
    v2 = Recorder()
    p2 = await backends(echo_app("v2", v2))
    cfg = write_config(tmp_path, route(free_port(), p2,
                                       extra="  outlier: {consecutive_gateway_failures: 50}\n"),
                       extra="server: {max_body_size: 8388608}\n")
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/chat/completions"
        async with session.post(url, data=SMALL) as r:
            assert r.status == 200, await r.text()
            assert r.headers["x-killgate-version"] == "v2"
            assert r.headers["x-killgate-decision"] == "failover"
        assert json.loads(v2.requests[-1]["body"]) == {"model": "m2-served", "messages": []}
        for body, headers, said in (
                (gzip.compress(SMALL), {"content-encoding": "gzip"}, "Content-Encoding"),
                (json.dumps(BIG).encode(), {}, "none of it is held")):
            async with session.post(url, data=io.BytesIO(body), headers=headers) as r:
                text = await r.text()
                assert r.status == 502, text
                msg = json.loads(text)["error"]["message"]
                assert "not failed over to v2, which rewrite the body's 'model'" in msg, msg
                assert said in msg, msg
        assert len(v2.requests) == 1
        assert g.gw.proxy is not None and not g.gw.proxy.peeks.by


async def test_a_shadow_that_rewrites_never_makes_the_primary_refuse(
        tmp_path: Path, backends, session: ClientSession) -> None:
    v1, v3 = Recorder(), Recorder()
    p1, p3 = await backends(echo_app("v1", v1)), await backends(echo_app("v3", v3))
    cfg = write_config(tmp_path, route(p1, free_port(), shadow=p3))
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/chat/completions"
        async with session.post(url, data=SMALL) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: len(v3.requests) == 1, 10, what="the shadow copy")
        assert json.loads(v3.requests[0]["body"])["model"] == "m3-served"
        zipped = gzip.compress(SMALL)
        async with session.post(url, data=zipped, headers={"content-encoding": "gzip"}) as r:
            assert r.status == 200, await r.text()
        assert v1.requests[-1]["body"] == SMALL and len(v1.requests) == 2
        await wait_until(lambda: g.gw.proxy is not None and g.gw.proxy.shadow is not None
                         and not g.gw.proxy.shadow.leases.get("chat"), 10,
                         what="the copies done")
        assert len(v3.requests) == 1  # no copy of a body whose `model` it cannot rewrite


async def test_a_version_killed_while_its_body_is_read_for_it_does_not_get_it(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The canary (which rewrites) is chosen before its body is read; killed while the peek
    waits for the rest, the request is routed again on the table of the kill (to the
    stable, as a pinned request to a killed version is), never sent to the killed version."""
    v1, v2 = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", v1)), await backends(echo_app("v2", v2))
    cfg = write_config(tmp_path, route(p1, p2))
    async with running_gateway(cfg) as g:
        async def between() -> None:
            await wait_until(lambda: g.gw.inflight.count == 1 and g.gw.proxy._tasks, 5,
                             what="the peek waiting for the body")
            await kill(session, g.admin, scope="version", route="chat", version="v2")

        first, rest = b'{"model": "m1", ', b'"messages": []}'
        answer = await in_two_parts(
            g.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"x-killgate-pin: v2\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(first), first), between,
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
    assert answer.split(b"\r\n", 1)[0].endswith(b" 200 OK"), answer[:300]
    assert b"x-killgate-version: v1" in answer.lower()
    assert not v2.requests and v1.requests[-1]["body"] == first + rest


async def test_a_held_body_is_read_in_the_peek_window_as_a_peek_reads_it(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A failover (or a shadow copy) to a version that rewrites `model` read a body held in
    memory WHOLE (heldmodel.py): a 10 MB JSON body held the event loop, every connection,
    about half a second at each failover during an outage of the stable, and a body a
    peek refuses (its top-level fields past `model_peek_bytes`: 400 when pinned to the
    canary) moved there. It is read in the window, as a peek reads it: refused alike."""
    v2 = Recorder()
    p2 = await backends(echo_app("v2", v2))
    cfg = write_config(tmp_path, route(free_port(), p2,
                                       extra="  outlier: {consecutive_gateway_failures: 50}\n"),
                       extra="server: {model_peek_bytes: 1024}\n")
    body = json.dumps({"messages": [{"role": "user", "content": "z" * 4000}],
                       "model": "m1"}).encode()  # (`model` after the window; all held)
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/chat/completions"
        async with session.post(url, data=body, headers={"x-killgate-pin": "v2"}) as r:
            assert r.status == 400, await r.text()
            assert "model_peek_bytes" in (await r.json())["error"]["message"]
        async with session.post(url, data=body) as r:
            text = await r.text()
            assert r.status == 502, text
            msg = json.loads(text)["error"]["message"]
            assert "not failed over to v2" in msg and "model_peek_bytes" in msg, msg
        assert not v2.requests
        # (a small body still moves, rewritten)
        async with session.post(url, data=SMALL) as r:
            assert r.status == 200 and r.headers["x-killgate-version"] == "v2", await r.text()
        assert json.loads(v2.requests[-1]["body"])["model"] == "m2-served"
