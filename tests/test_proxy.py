"""The data plane over real sockets: an in-process gateway in front of loopback backends."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession, web

from tests.backends import RawBackend, Recorder, black_hole, echo_app, hang_app, sse_app
from tests.conftest import free_port, running_gateway, two_versions, wait_until, write_config
from tests.rawhttp import read_answer

INFER = "/v2/models/iris/infer"


async def test_forwards_and_labels_every_response(tmp_path: Path, backends, session) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0))
    async with running_gateway(cfg) as g:
        async with session.post(g.url + INFER + "?a=1", json={"x": 1}) as r:
            body = await r.json()
            assert r.status == 200
            assert r.headers["x-killgate-route"] == "iris"
            assert r.headers["x-killgate-version"] == "v1"
            assert r.headers["x-killgate-decision"] == "weighted"
        assert body["path"] == INFER + "?a=1"
        assert json.loads(body["body"]) == {"x": 1}
        async with session.get(g.url + "/nope") as r:
            assert r.status == 404
            assert (await r.json())["error"]["type"] == "no_route"
            assert "x-killgate-route" not in r.headers


async def test_each_answer_is_labelled_with_what_served_it(tmp_path: Path, backends,
                                                          session) -> None:
    """The x-killgate-* lines of an answer are those of its own route, version and decision
    (the last answer's are reused when they are the same objects: `answers.Labels`), over one
    connection whose answers alternate between versions, decisions and routes."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(p1, p2, 50, 50, "allow_pin: true\n") + two_versions(
        p1, p2, 0, 100, name="other", prefix="/other")
    async with running_gateway(write_config(tmp_path, routes)) as g:
        seen = Counter()
        for i in range(60):
            pin = {"x-killgate-pin": "v1"} if i % 5 == 0 else {}
            path = "/other/x" if i % 7 == 0 else INFER
            async with session.get(g.url + path, headers=pin) as r:
                served = (await r.json())["version"]
                got = (r.headers["x-killgate-route"], r.headers["x-killgate-version"],
                       r.headers["x-killgate-decision"])
            want_route = "other" if path != INFER else "iris"
            assert got[:2] == (want_route, served), (i, got)
            assert got[2] == ("pinned" if pin and path == INFER else "weighted"), (i, got)
            seen[got] += 1
        assert len(seen) >= 4, seen  # (both versions of iris, pinned, and the other route)


async def test_split_90_10_over_http(tmp_path: Path, backends) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 90, 10))
    # (the split's precision, ±1 point over 20,000 draws, is test_routing.py's
    # test_split_90_10_within_one_point_over_20000; here: the live data plane applies it)
    n = 5_000
    counts: Counter[str] = Counter()
    async with running_gateway(cfg) as g:
        conn = aiohttp.TCPConnector(limit=64)
        async with ClientSession(connector=conn) as s:
            async def worker(k: int) -> None:
                for _ in range(k):
                    async with s.get(g.url + "/v2/models/iris/ready") as r:
                        await r.read()
                        counts[r.headers["x-killgate-version"]] += 1

            await asyncio.gather(*(worker(n // 50) for _ in range(50)))
    assert sum(counts.values()) == n
    share = counts["v2"] / n
    assert abs(share - 0.10) <= 0.02, counts  # binomial sd 0.42 points: ~4.7 sd


async def test_sticky_over_http(tmp_path: Path, backends, session) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50, "sticky: {header: x-user-id}\n"))
    async with running_gateway(cfg) as g:
        seen = Counter()
        for _ in range(1000):
            async with session.get(g.url + INFER, headers={"x-user-id": "alice"}) as r:
                await r.read()
                seen[(r.headers["x-killgate-version"], r.headers["x-killgate-decision"])] += 1
        assert len(seen) == 1 and next(iter(seen))[1] == "sticky"


async def test_pin_only_where_allowed(tmp_path: Path, backends, session) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(p1, p2, 100, 0, "allow_pin: true\n") + two_versions(
        p1, p2, 100, 0, name="nopin", prefix="/nopin")
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        async with session.get(g.url + INFER, headers={"x-killgate-pin": "v2"}) as r:
            assert (r.headers["x-killgate-version"], r.headers["x-killgate-decision"]) == (
                "v2", "pinned")
        async with session.get(g.url + INFER, headers={"x-killgate-pin": "v9"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "unknown_version"
        async with session.get(g.url + "/nopin/x", headers={"x-killgate-pin": "v2"}) as r:
            assert r.headers["x-killgate-version"] == "v1"


async def _ndjson_backend(backends) -> int:
    async def ndjson(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/x-ndjson",
                                           "cache-control": "max-age=60"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for i in range(3):
            await resp.write(b'{"token": %d}\n' % i)
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ndjson)
    return await backends(app)


async def test_a_chunked_stream_is_marked_not_to_be_buffered(tmp_path: Path, backends,
                                                           session) -> None:
    """CONTRACT §3 for a stream that is not SSE (NDJSON tokens, chunked): an nginx in
    front of the gateway buffered it whole, as it had neither field."""
    p = await _ndjson_backend(backends)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g, session.post(g.url + INFER, json={}) as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert (await r.read()).count(b"token") == 3


async def test_a_stream_to_an_http10_client_is_marked_not_to_be_buffered(
        tmp_path: Path, backends) -> None:
    """nginx speaks HTTP/1.0 to what it proxies unless told otherwise (proxy_http_version):
    the stream then goes out unframed, ended by the close, and was not marked, so the
    nginx the marking is for still buffered the token stream whole."""
    p = await _ndjson_backend(backends)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            writer.write(b"POST /v2/models/iris/infer HTTP/1.0\r\nHost: x\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
            raw = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = [tuple(x.strip() for x in line.lower().split(b":", 1))
              for line in head.split(b"\r\n")[1:]]
    assert (b"x-accel-buffering", b"no") in fields, head
    assert (b"cache-control", b"no-cache") in fields, head
    assert (b"cache-control", b"max-age=60") not in fields, head
    assert body.count(b"token") == 3, raw


async def test_sse_events_arrive_as_sent(tmp_path: Path, backends, session) -> None:
    p1 = await backends(sse_app("v1", events=10, interval=0.3))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        lags = []
        async with session.get(g.url + "/v2/models/iris/stream") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            async for line in r.content:
                if line.startswith(b"data: {"):
                    lags.append(time.time() - json.loads(line[6:])["sent"])
        assert len(lags) == 10  # a 3 s stream
        # an event held back until the next one (or the end) would lag >= 0.3 s; the rest
        # is for a loaded machine's scheduling
        assert max(lags) < 0.25, lags


async def test_hop_by_hop_headers_never_cross(tmp_path: Path, backends, session) -> None:
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec, extra_headers={
        "Connection": "x-backend-secret", "x-backend-secret": "1", "Keep-Alive": "timeout=5",
        "Proxy-Authenticate": "Basic", "Upgrade": "h2c", "x-killgate-version": "spoofed",
        "x-end-to-end": "kept"}))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + INFER, headers={
            "Connection": "x-secret", "x-secret": "1", "TE": "trailers",
            "Proxy-Authorization": "Basic abc", "Proxy-Connection": "keep-alive",
            "x-forwarded-for": "6.6.6.6", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            "x-killgate-internal": "evil", "forwarded": "for=6.6.6.6;proto=https",
            "x-real-ip": "6.6.6.6", "x-forwarded-proto": "https",
            "x-forwarded-host": "evil.example", "x-forwarded-port": "443",
            "x-forwarded-prefix": "/admin", "x-forwarded-ssl": "on"}) as r:
            await r.read()
            got = {k.lower(): v for k, v in r.headers.items()}
        sent = dict(rec.requests[-1]["headers"])
    for name in ("x-secret", "te", "proxy-authorization", "proxy-connection", "keep-alive",
                 "upgrade", "x-killgate-internal", "forwarded", "x-real-ip", "x-forwarded-port",
                 "x-forwarded-prefix", "x-forwarded-ssl"):
        assert name not in sent, name
    # RELIABILITY row 32: rebuilt from the socket peer, each once; nothing spoofed passes
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"] != "evil.example"
    names = [k for k, _ in rec.requests[-1]["headers"]]
    assert all(names.count(n) == 1 for n in ("x-forwarded-for", "x-forwarded-proto",
                                             "x-forwarded-host"))
    assert "6.6.6.6" not in repr(rec.requests[-1]["headers"])
    assert sent["via"].endswith("1.1 killgate")
    assert sent["traceparent"].startswith("00-aaaa")
    for name in ("x-backend-secret", "keep-alive", "proxy-authenticate", "upgrade"):
        assert name not in got, name
    assert got["x-killgate-version"] == "v1"
    assert got["x-end-to-end"] == "kept"
    assert "1.1 killgate" in got["via"]


async def test_backend_dies_mid_sse_stream(tmp_path: Path, backends, session) -> None:
    p1 = await backends(sse_app("v1", events=10, interval=0.05, die_after=3))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g, session.get(g.url + "/v2/models/iris/stream") as r:
        body = await asyncio.wait_for(r.read(), 5)
    events = [e for e in body.decode().split("\n\n") if e]
    assert len(events) == 4
    assert events[-1].startswith("event: killgate.error\ndata: ")
    assert json.loads(events[-1].split("data: ", 1)[1]) == {
        "type": "upstream_failed", "route": "iris", "version": "v1"}


@pytest.mark.parametrize("path", ["/v2/models/iris/chunked", "/v2/models/iris/sized"])
async def test_backend_dies_mid_body_client_sees_incomplete(tmp_path: Path, backends, session,
                                                            path: str) -> None:
    p1 = await backends(sse_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g, session.get(g.url + path) as r:
        if path.endswith("/sized"):  # small (10 KB): held until whole, on either path, so
            assert r.status == 502  # its cut is a clean error (tests/test_slowpath_whole.py)
            assert (await r.json())["error"]["type"] == "upstream_failed"
            return
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(r.read(), 5)


async def test_unreachable_version_fails_over_before_delivery(tmp_path: Path, backends,
                                                              session) -> None:
    p1 = await backends(echo_app("v1"))
    dead = free_port()
    cfg = write_config(tmp_path, two_versions(dead, p1, 50, 50))
    async with running_gateway(cfg) as g:
        seen = Counter()
        for _ in range(40):
            async with session.post(g.url + INFER, data=b"x" * 100) as r:
                assert r.status == 200
                seen[(r.headers["x-killgate-version"], r.headers["x-killgate-decision"])] += 1
        assert set(seen) <= {("v2", "weighted"), ("v2", "failover")}
        assert seen[("v2", "failover")] > 0


async def test_a_black_holed_version_fails_over_within_the_connect_timeout(
        tmp_path: Path, backends, session) -> None:
    """RELIABILITY row 2, the silent kind: connection attempts to v1 get no answer at all
    (its listen queue is full and nobody accepts, so SYNs are dropped). No request waits
    longer than `timeouts.connect` before moving to v2, and none fails."""
    p2 = await backends(echo_app("v2"))
    with black_hole() as port:
        cfg = write_config(tmp_path, two_versions(port, p2, 50, 50,
                                                  "timeouts: {connect: 1s}\n"
                                                  "outlier: {enabled: false}\n"))
        async with running_gateway(cfg) as g:
            took, seen = [], Counter()

            async def one() -> None:  # (all at once: none waits behind another's attempt)
                t0 = time.monotonic()
                async with session.get(g.url + INFER) as r:
                    assert r.status == 200
                    seen[(r.headers["x-killgate-version"], r.headers["x-killgate-decision"])] += 1
                took.append(time.monotonic() - t0)

            await asyncio.gather(*(one() for _ in range(20)))
    assert set(seen) <= {("v2", "weighted"), ("v2", "failover")}
    assert seen[("v2", "failover")] > 0  # 50/50 over 20: 1 in a million to see none
    # one connect timeout, not two (2 s): the rest of a second is for a loaded machine
    assert max(took) < 1.9, max(took)
    failed_over = sorted(took)[-seen[("v2", "failover")]:]
    assert min(failed_over) >= 0.95  # they did wait for the timeout (the hole is silent)


async def test_all_unreachable_is_502_or_fallback(tmp_path: Path, session) -> None:
    d1, d2 = free_port(), free_port()
    routes = two_versions(d1, d2) + two_versions(
        d1, d2, name="fb", prefix="/fb",
        extra="fallback: {status: 503, json: {error: {type: unavailable}}}\n")
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        async with session.get(g.url + INFER) as r:
            assert r.status == 502
            assert (await r.json())["error"]["type"] == "upstream_failed"
            assert r.headers["x-killgate-route"] == "iris"
        async with session.get(g.url + "/fb/x") as r:
            assert r.status == 503
            assert r.headers["x-killgate-decision"] == "fallback"
            assert await r.json() == {"error": {"type": "unavailable"}}


async def test_total_timeout_is_504(tmp_path: Path, backends, session) -> None:
    p1 = await backends(hang_app())
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0,
                                              "timeouts: {connect: 200ms, total: 300ms}\n"))
    async with running_gateway(cfg) as g:
        t0 = time.monotonic()
        async with session.get(g.url + INFER) as r:
            assert r.status == 504
            assert (await r.json())["error"]["type"] == "upstream_timeout"
        assert 0.25 < time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("events, interval, timeouts, least, most", [
    # a stream that goes silent longer than `idle` is cut then
    (3, 2.0, "{connect: 1s, total: 10s, idle: 300ms}", 0.25, 1.5),
    # RELIABILITY row 6: one dripping faster than `idle` is still ended by `total`
    (100, 0.1, "{connect: 1s, total: 1s, idle: 500ms}", 0.9, 3.0),
], ids=["idle", "total"])
async def test_stream_timeouts_cut_the_stream(tmp_path: Path, backends, session, events: int,
                                              interval: float, timeouts: str, least: float,
                                              most: float) -> None:
    p1 = await backends(sse_app("v1", events=events, interval=interval))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0, f"timeouts: {timeouts}\n"))
    async with running_gateway(cfg) as g:
        t0 = time.monotonic()
        async with session.get(g.url + "/v2/models/iris/s") as r:
            body = await asyncio.wait_for(r.read(), 10)
        took = time.monotonic() - t0
        assert b"event: killgate.error" in body and b"[DONE]" not in body
        assert least < took < most, took
        # nothing is left open behind it
        pool = g.gw.upstreams.pools[("http", "127.0.0.1", p1)]
        await wait_until(lambda: g.gw.inflight.count == 0 and pool.open == 0, 5,
                         what="the backend exchange to be closed")


async def test_body_limit_413(tmp_path: Path, backends, session) -> None:
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       extra="server: {max_body_size: 100000}\n")
    async with running_gateway(cfg) as g:
        async with session.post(g.url + INFER, data=b"x" * 200_000) as r:
            assert r.status == 413
            assert (await r.json())["error"]["type"] == "body_too_large"

        async def chunks():
            for _ in range(30):
                yield b"y" * 10_000

        async with session.post(g.url + INFER, data=chunks()) as r:
            assert r.status == 413
        async with session.post(g.url + INFER, data=b"z" * 90_000) as r:
            assert r.status == 200
    assert [len(q["body"]) for q in rec.requests] == [90_000]


@pytest.mark.parametrize("pipelined", [False, True])
async def test_a_chunked_body_over_the_limit_is_413_however_it_arrives(
        tmp_path: Path, backends, pipelined: bool) -> None:
    """`max_body_size` below the 64 KiB read whole first: a chunked body that had all
    arrived when the gateway looked (one write; or behind a pipelined request, parsed while
    it queued) was forwarded whole past the limit: only a Content-Length was checked at
    the head, and the read of a body's start returned a complete body of any size."""
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       extra="server: {max_body_size: 1000}\n")
    body = b"x" * 3000
    chunked = (b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    first = b"GET " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n" if pipelined else b""
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            writer.write(first + chunked)
            if pipelined:
                status, _, _ = await read_answer(reader)
                assert status == 200
            status, _, answer = await read_answer(reader)
        finally:
            writer.close()
    assert status == 413, answer
    assert [len(q["body"]) for q in rec.requests] == ([0] if pipelined else [])


async def test_large_body_streams_through(tmp_path: Path, backends, session) -> None:
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def chunks():
        for i in range(0, len(payload), 65536):
            yield payload[i:i + 65536]

    async with running_gateway(cfg) as g:
        async with session.post(g.url + INFER, data=io.BytesIO(payload)) as r:
            assert r.status == 200
        async with session.post(g.url + INFER, data=chunks()) as r:
            assert r.status == 200
    assert [q["body"] == payload for q in rec.requests] == [True, True]


@pytest.mark.parametrize("payload", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 600 Odd\r\nContent-Length: 5\r\n\r\nhello",
], ids=["cl+te", "dup-cl", "nul", "garbage", "bare-lf", "invalid-cl", "negative-cl", "http2.0",
        "status-099", "status-600"])
async def test_malformed_backend_answer_is_502(tmp_path: Path, session, payload: bytes) -> None:
    """RELIABILITY row 7: 502, nothing of the answer forwarded, and the backend connection
    closed rather than reused (the backend here keeps its side open)."""
    raw = RawBackend(payload, close=False)
    port = await raw.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            for _ in range(2):
                async with session.get(g.url + INFER) as r:
                    assert r.status == 502
                    body = await r.read()
                assert b"hello" not in body
        assert raw.connections == 2  # a fresh connection for the second request
    finally:
        await raw.stop()


async def test_model_field_routes_and_is_rewritten(tmp_path: Path, backends, session) -> None:
    rec1, rec2 = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("small", rec1)), await backends(echo_app("large", rec2))
    routes = f"""\
- name: small
  match: {{path_prefix: /v1, model: chat-small}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}/openai", model: llama-small-v1, weight: 100}}
- name: large
  match: {{path_prefix: /v1, model: chat-large}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p2}", weight: 100}}
"""
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        body = {"messages": [{"role": "user", "content": "héllo"}], "model": "chat-small",
                "stream": False}
        async with session.post(g.url + "/v1/chat/completions", json=body) as r:
            assert r.headers["x-killgate-route"] == "small"
        async with session.post(g.url + "/v1/chat/completions",
                                json={"model": "chat-large", "messages": []}) as r:
            assert r.headers["x-killgate-route"] == "large"
        async with session.post(g.url + "/v1/chat/completions",
                                json={"model": "other"}) as r:
            assert r.status == 404
        async with session.post(g.url + "/v1/chat/completions",
                                data=b'{"model":"chat-small","model":"chat-large"}') as r:
            assert r.status == 400
    sent = rec1.requests[0]
    assert sent["path"] == "/openai/v1/chat/completions"
    assert json.loads(sent["body"]) == {**body, "model": "llama-small-v1"}
    assert json.loads(rec2.requests[0]["body"])["model"] == "chat-large"


async def test_http10_with_transfer_encoding_is_refused(tmp_path: Path, backends) -> None:
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v2/models/iris/infer HTTP/1.0\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        await writer.wait_closed()
    assert status.split()[1] == b"400"
    assert rec.requests == []


async def test_keepalive_connections_are_reused(tmp_path: Path, backends, session) -> None:
    conns: set[object] = set()

    async def handler(req: web.Request) -> web.Response:
        conns.add(id(req.transport))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", handler)
    p1 = await backends(app)
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        for _ in range(50):
            async with session.get(g.url + INFER) as r:
                await r.read()
    assert len(conns) == 1


async def test_client_disconnect_cancels_backend_exchange(tmp_path: Path, backends) -> None:
    p1 = await backends(hang_app())
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        async with ClientSession() as s:
            with pytest.raises(asyncio.TimeoutError):
                async with s.get(g.url + INFER, timeout=aiohttp.ClientTimeout(total=0.3)):
                    pass
        pool = g.gw.upstreams.pools[("http", "127.0.0.1", p1)]
        await wait_until(lambda: g.gw.inflight.count == 0 and pool.open == 0, 5,
                         what="the upstream exchange to be dropped")


@pytest.mark.parametrize("when", ["mid-response", "mid-upload"])
async def test_client_gone_mid_exchange_closes_the_backend_side(tmp_path: Path, backends,
                                                                when: str) -> None:
    """RELIABILITY row 11: a client that goes away after the first event of a stream, or
    halfway through sending its body, leaves no exchange, pooled connection or request."""
    rec = Recorder()
    p1 = await backends(sse_app("v1", events=200, interval=0.05))
    p2 = await backends(echo_app("v2", rec))
    port = p1 if when == "mid-response" else p2
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    async with running_gateway(cfg) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            if when == "mid-response":
                w.write(b"GET /v2/models/iris/stream HTTP/1.1\r\nHost: x\r\n\r\n")
                await asyncio.wait_for(r.readuntil(b"data: {"), 5)  # the first event
            else:
                w.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 1048576\r\n\r\n" + b"x" * 131072)
                await w.drain()
                await wait_until(lambda: g.gw.inflight.count == 1, 5, what="the request")
        finally:
            w.transport.abort()
        pool = g.gw.upstreams.pools[("http", "127.0.0.1", port)]
        await wait_until(lambda: g.gw.inflight.count == 0 and pool.open == 0, 5,
                         what="the backend exchange to be closed")
    assert rec.requests == []  # the half-sent body never became a request


async def test_slowloris_and_idle_sockets_are_closed(tmp_path: Path, backends) -> None:
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       extra="server: {header_timeout: 500ms, body_timeout: 500ms}\n")
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        t0 = time.monotonic()
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        drip_r, drip_w = await asyncio.open_connection("127.0.0.1", port)
        drip_w.write(b"GET /v2/models/iris/x HTTP/1.1\r\nHost: x\r\n")  # never finished
        await drip_w.drain()
        assert await asyncio.wait_for(idle_r.read(), 3) == b""  # closed by the gateway
        assert await asyncio.wait_for(drip_r.read(), 3) == b""
        assert 0.4 < time.monotonic() - t0 < 2.0
        for w in (idle_w, drip_w):
            w.close()
        # a slow body: the head promises 100 bytes, 10 arrive
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /v2/models/iris/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                + b"x" * 10)
        await w.drain()
        status = await asyncio.wait_for(r.readline(), 3)
        assert status.split()[1] == b"408"
        w.close()
        await _trickled_and_paced_small_bodies(port)
        # a well-behaved client on a kept-alive connection is unaffected by the deadline
        async with ClientSession() as s:
            for _ in range(3):
                async with s.get(g.url + "/v2/models/iris/x") as resp:
                    assert resp.status == 200
                await asyncio.sleep(0.3)
    assert [q["path"] for q in rec.requests] == ["/v2/models/iris/paced"] + [
        "/v2/models/iris/x"] * 3
    assert rec.requests[0]["body"] == b"y" * 4000


async def _trickled_and_paced_small_bodies(port: int) -> None:
    """(body_timeout: 500ms) A small body (buffered whole before its request goes on) sent a
    byte every 0.3 s, each within body_timeout of the last, held its connection for ever:
    a connection `max_connections` could not reclaim, so enough of them locked every client
    out. It is now whole within body_timeout of its head, or 408 and the close; a body sent
    in pieces at an ordinary pace is not cut."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v2/models/iris/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    await w.drain()
    t0 = time.monotonic()

    async def trickle() -> None:
        while not r.at_eof() and not w.is_closing():
            await asyncio.sleep(0.3)
            w.write(b"x")

    drip = asyncio.create_task(trickle())
    try:
        got = await asyncio.wait_for(r.read(), 3)  # the answer, then the gateway's close
    finally:
        drip.cancel()
        w.close()
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"did not arrive within 0.5s" in got and b" of 100 bytes came" in got
    assert 0.45 < time.monotonic() - t0 < 1.5
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v2/models/iris/paced HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n")
    for _ in range(4):  # 4 KB in four pieces over 0.15 s
        w.write(b"y" * 1000)
        await w.drain()
        await asyncio.sleep(0.05)
    status, _, _ = await read_answer(r, 3)
    assert status == 200
    w.close()


async def test_complete_answers_keep_http_semantics(tmp_path: Path, backends) -> None:
    """The one-write fast path: framing, keep-alive, HTTP/1.0 and Connection: close."""
    p1 = await backends(echo_app("v1", extra_headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # two requests on one kept-alive connection
            w.write(b"GET /v2/models/iris/a HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            fields = {k.lower(): v for k, v in
                      (line.split(b": ", 1) for line in head.split(b"\r\n")[1:-2])}
            body = await r.readexactly(int(fields[b"content-length"]))
            assert json.loads(body)["version"] == "v1"
            assert fields[b"date"] == b"Mon, 01 Jan 2024 00:00:00 GMT"  # the backend's own
            assert fields[b"x-killgate-decision"] == b"weighted" and b"connection" not in fields
        w.write(b"GET /v2/models/iris/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        data = await asyncio.wait_for(r.read(), 5)  # the gateway closes after answering
        assert b"connection: close\r\n" in data.lower()
        w.close()
        await w.wait_closed()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /v2/models/iris/a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        assert b"connection: keep-alive\r\n" in head.lower()
        w.close()
        await w.wait_closed()


async def test_delivered_requests_retry_only_when_the_route_opts_in(tmp_path: Path, backends,
                                                                    session) -> None:
    bad = await backends(echo_app("v1", status=503))
    good = await backends(echo_app("v2"))
    reset = RawBackend(b"", close=True)  # reads the request, then closes without answering
    rport = await reset.start()
    off = "outlier: {enabled: false}\n"  # keep the failing versions in the split
    routes = (two_versions(bad, good, 50, 50, "retry: {retry_on: ['503'], attempts: 2, "
                                              "budget: 1.0}\n" + off)
              + two_versions(bad, good, 50, 50, off, name="plain", prefix="/plain")
              + two_versions(rport, good, 50, 50, "retry: {retry_on: [reset], attempts: 2, "
                                                  "budget: 1.0}\n" + off, name="rst", prefix="/rst")
              + two_versions(rport, good, 50, 50, off, name="rst0", prefix="/rst0"))
    cfg = write_config(tmp_path, routes)
    try:
        async with running_gateway(cfg) as g:
            async def codes(path: str, n: int = 60) -> Counter[int]:
                out: Counter[int] = Counter()
                for _ in range(n):
                    async with session.post(g.url + path, data=b"{}") as r:
                        await r.read()
                        out[r.status] += 1
                return out

            assert await codes("/v2/models/iris/x") == {200: 60}  # 503s retried on v2
            plain = await codes("/plain/x")
            assert plain[503] > 10 and plain[200] > 10  # no opt-in: the 503s reach clients
            assert await codes("/rst/x") == {200: 60}  # resets retried on v2
            rst0 = await codes("/rst0/x")
            assert rst0[502] > 10  # a reset after delivery is not retried without opt-in
            assert g.gw.metrics.get("killgate_retries_total", ("iris", "503")) > 10
    finally:
        await reset.stop()


async def test_retry_budget_caps_retries(tmp_path: Path, backends, session) -> None:
    bad = await backends(echo_app("v1", status=503))
    good = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(bad, good, 100, 0,
                                              "retry: {retry_on: ['5xx'], attempts: 3, "
                                              "budget: 0.1}\noutlier: {enabled: false}\n"))
    async with running_gateway(cfg) as g:
        statuses: Counter[int] = Counter()
        for _ in range(100):
            async with session.get(g.url + INFER) as r:
                await r.read()
                statuses[r.status] += 1
    # 10% of 100 requests may be retried: about 10 succeed on v2, the rest see v1's 503
    assert 8 <= statuses[200] <= 12 and statuses[503] == 100 - statuses[200]


@pytest.mark.parametrize("target", [
    b"/v2/models/iris/../other/infer", b"/v2/models/iris/%2e%2e/other", b"/v2/models/iris/./x",
    b"/v2/models/iris%2Fx", b"/v2/models/iris/a%5cb", b"/v2/models/iris/a%00b",
    # absolute-form: routed by its path, it would reach the backend as the URL
    b"http://evil.example/v2/models/iris/infer", b"http://x/v2/models/iris/../../admin", b"*",
])
async def test_ambiguous_paths_are_refused(tmp_path: Path, backends, target: bytes) -> None:
    rec = Recorder()
    p1 = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        w.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        status = await asyncio.wait_for(r.readline(), 5)
        w.close()
        await w.wait_closed()
    assert status.split()[1] == b"400", status
    assert rec.requests == []


async def _raw_answer(port: int, request: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, body by the head's own framing, bytes after it until the close) of one
    request on a fresh connection, read as a strict client would."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(request)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        low = head.lower()
        if request.startswith(b"HEAD ") or head.split(b" ")[1] in (b"204", b"304"):
            body = b""
        elif b"content-length: " in low:
            n = int(low.split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await asyncio.wait_for(r.readexactly(n), 5)
        elif b"transfer-encoding: chunked" in low:
            body = b""
            while (size := int(await asyncio.wait_for(r.readline(), 5), 16)) > 0:
                body += await r.readexactly(size + 2)
                body = body[:-2]
            await r.readexactly(2)
        else:
            body = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            rest = await asyncio.wait_for(r.read(), 2)
        return head, body, rest
    finally:
        w.close()


@pytest.mark.parametrize("payload, status, body", [
    # a 1xx whose Content-Length framed the final answer: 5 bytes announced, 11 sent
    (b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world", b"200", b"hello world"),
    # the same, sized by the 1xx and chunked by the final answer
    (b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
     b"200", b"hello world"),
    # a 204 whose "body" is a second answer: it was merged into the first (status 200)
    (b"HTTP/1.1 204 No Content\r\nX-First: 1\r\nContent-Length: 46\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 2\r\n\r\nhi", b"204", b""),
], ids=["1xx-framing", "1xx-framing-chunked", "204-with-an-answer"])
async def test_a_backends_extra_messages_never_reframe_or_replace_its_answer(
        tmp_path: Path, payload: bytes, status: bytes, body: bytes) -> None:
    """A backend's answer is framed by its own fields only, and what follows it on the
    connection is never read as (part of) an answer."""
    raw = RawBackend(payload, close=status == b"200")  # (answers one request a connection)
    port = await raw.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            for _ in range(2):  # the second on a fresh backend connection
                head, got, rest = await _raw_answer(
                    g.gw.data_addr[1], b"GET " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n")
                assert head.split(b" ")[1] == status, head
                assert got == body and rest == b"", (head, got, rest)
                assert b"x-smuggled" not in head.lower()
        assert raw.connections == 2
    finally:
        await raw.stop()


async def test_a_backend_that_never_reads_the_body_times_out(tmp_path: Path) -> None:
    """A backend that accepts and never reads: once the socket buffers are full the body's
    upload waits, under the route's idle timeout (it waited for ever: the client, its
    request and the backend connection were held until the client gave up)."""
    held: list[asyncio.StreamWriter] = []

    async def deaf(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # never reads

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0,
                                                  extra="timeouts: {idle: 300ms}\n"))
        async with running_gateway(cfg) as g:
            r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            size = 10 * 1024 * 1024  # max_body_size (10 MiB): far more than socket buffers
            w.write(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % size)

            async def upload() -> None:
                with contextlib.suppress(ConnectionError):
                    for _ in range(size // 65536):
                        w.write(b"x" * 65536)
                        await w.drain()

            sending = asyncio.ensure_future(upload())
            t0 = time.monotonic()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 504"), head
            assert time.monotonic() - t0 < 5
            sending.cancel()
            w.close()
            await wait_until(lambda: g.gw.inflight.count == 0, 5)
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


class _ClosesIdle:
    """A backend that answers the first request on each connection (keep-alive), and
    closes the connection when a second arrives on it without answering: what a backend
    closing an idle connection just as the gateway reuses it looks like."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self.server: asyncio.AbstractServer | None = None

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.answered += 1
            await r.readuntil(b"\r\n\r\n")  # a second request: gone without a word
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_stale_pooled_connection_is_retried_fresh_on_the_fast_path(
        tmp_path: Path, session: ClientSession) -> None:
    """A pooled connection the backend closed just as a request went out on it (no byte
    of answer) is tried once more on a new connection, as the slow path always did: the
    fast path (every request on an idle pooled connection) answered 502, and with two
    such connections idle, the retry took the other stale one. (A request safe to send
    twice: here a POST with an Idempotency-Key; see the next test for one without.)"""
    backend = _ClosesIdle()
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            pool_of = g.gw.upstreams.pools

            async def post() -> int:
                async with session.post(g.url + INFER, data=b"{}",
                                        headers={"Idempotency-Key": "k1"}) as r:
                    await r.read()
                    return r.status

            assert await asyncio.gather(post(), post()) == [200, 200]  # two pooled now
            await wait_until(lambda: len(pool_of[("http", "127.0.0.1", port)].idle) == 2, 5)
            for _ in range(3):
                assert await post() == 200
            assert g.gw.metrics.get("killgate_upstream_errors_total",
                                    ("iris", "v1", "UpstreamStale")) >= 1
    finally:
        await backend.stop()


@pytest.mark.parametrize("retry", [False, True])
async def test_a_post_a_stale_connection_took_is_not_sent_twice_unasked(
        tmp_path: Path, session: ClientSession, retry: bool) -> None:
    """(failover review) A close with no answer byte on a reused connection is also what a
    backend that crashed, or gave up, while it processed the request sends: a POST was sent
    again on a new connection by itself, and processed twice (a request that crashes its
    server crashed a second one). Now only a request safe to send twice is (a GET, an
    Idempotency-Key); a POST is a 502, unless the route opts in with `retry_on: [reset]`."""
    backend = _ClosesIdle()
    port = await backend.start()
    extra = "retry: {retry_on: [reset], attempts: 2}\n" if retry else ""
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0, extra=extra))
        async with running_gateway(cfg) as g:
            async with session.post(g.url + INFER, data=b"{}") as r:  # pools the connection
                assert r.status == 200
                await r.read()
            await wait_until(lambda: len(g.gw.upstreams.pools[("http", "127.0.0.1", port)]
                                         .idle) == 1, 5)
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
                assert r.status == (200 if retry else 502), r.status
            assert backend.connections == (2 if retry else 1)  # (sent once, unless opted in)
            async with session.get(g.url + INFER) as r:  # a GET: fresh once, by itself
                await r.read()
                assert r.status == 200
    finally:
        await backend.stop()


async def test_a_connection_idle_past_backend_idle_timeout_is_not_reused(
        tmp_path: Path, session: ClientSession) -> None:
    """A backend closes its idle connections after its own keep-alive timeout (uvicorn's:
    5 s); a POST sent on one just as it does has nowhere to go (above). A pooled connection
    idle longer than `server.backend_idle_timeout` is closed instead of reused."""
    backend = _ClosesIdle()
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                           extra="server: {backend_idle_timeout: 200ms}\n")
        async with running_gateway(cfg) as g:
            pool = None
            for _ in range(3):
                async with session.post(g.url + INFER, data=b"{}") as r:
                    await r.read()
                    assert r.status == 200  # a new connection each time: never stale
                pool = g.gw.upstreams.pools[("http", "127.0.0.1", port)]
                await wait_until(lambda: len(pool.idle) == 1, 5)  # noqa: B023
                idle_at = time.monotonic()
                await wait_until(lambda: time.monotonic() - idle_at > 0.4, 5, 0.05)  # noqa: B023
            assert backend.connections == 3 and backend.answered == 3
            assert g.gw.metrics.get("killgate_upstream_errors_total",
                                    ("iris", "v1", "UpstreamStale")) == 0
    finally:
        await backend.stop()


def _paths_app() -> web.Application:
    """Answers of every shape, the same each time they are asked for."""

    async def handler(req: web.Request) -> web.StreamResponse:
        await req.read()
        kind = req.path.rsplit("/", 1)[-1]
        if kind == "sized":
            return web.Response(body=b"hello", headers={"X-Kind": "sized"})
        if kind == "nocontent":
            return web.Response(status=204, headers={"X-Kind": "nocontent"})
        if kind == "notmodified":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        if kind == "error":
            return web.json_response({"error": "nope"}, status=503)
        resp = web.StreamResponse(headers={"X-Kind": kind, "Cache-Control": "max-age=60"})
        if kind.startswith("sse"):
            resp.content_type = "text/event-stream"
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        await resp.write(b"data: 1\n\n")
        if kind.endswith("stream"):
            await asyncio.sleep(0.05)  # the rest comes later: streamed on both paths
            await resp.write(b"data: 2\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{t:.*}", handler)
    return app


async def _answer(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, body, _ = await _raw_answer(port, request)
    lines = head.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b": ")
            if name.lower() not in (b"date", b"content-length", b"transfer-encoding"):
                fields[name.lower()] = value
    return lines[0], fields, body


@pytest.mark.parametrize("kind", ["sized", "chunked", "sse", "sse-stream", "nocontent",
                                  "notmodified", "error"])
@pytest.mark.parametrize("method", [b"POST", b"HEAD"])
async def test_the_fast_and_slow_paths_answer_alike(tmp_path: Path, backends, kind: str,
                                                    method: bytes) -> None:
    """The same request, once on the fast path (its body in memory: sent from the parser
    callback) and once on the slow path (a chunked body: a coroutine reads it first), gets
    the same status line, the same fields (but for framing and Date) and the same body."""
    p = await backends(_paths_app())
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        target = method + b" /v2/models/iris/" + kind.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        fast_req = target + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        slow_req = target + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        await _answer(port, fast_req)  # a pooled connection for the fast path
        fast = await _answer(port, fast_req)
        slow = await _answer(port, slow_req)
        assert fast == slow
        if kind.startswith("sse") and method == b"POST":
            assert fast[1][b"cache-control"] == b"no-cache"
            assert fast[1][b"x-accel-buffering"] == b"no"


async def test_an_sse_stream_that_fails_ends_with_its_error_event_and_the_connection_closes(
        tmp_path: Path, backends) -> None:
    """CONTRACT §3: the final `killgate.error` event, "and then closes": the client's
    connection is not kept alive behind a stream that failed (here a backend gone silent
    past `idle`), so a client reading to EOF is not left waiting for the keep-alive timeout."""
    p1 = await backends(sse_app("v1", events=3, interval=2.0))
    cfg = write_config(tmp_path, two_versions(
        p1, p1, 100, 0, "timeouts: {connect: 1s, total: 10s, idle: 300ms}\n"))
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(g.url.rsplit(":", 1)[1]))
        try:
            writer.write(b"GET /v2/models/iris/s HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
            got = await asyncio.wait_for(reader.read(-1), 5)  # to EOF: the gateway closed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    assert b"event: killgate.error" in got and got.endswith(b"0\r\n\r\n"), got[-200:]
