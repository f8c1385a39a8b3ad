"""Review of the fast path's cuts (fast3): attacks on where a request begins, now that the
parser has no `on_message_begin`. Each failed before its fix (see the commit)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dataplane.protocol import Limits
from tests.test_protocol import GET, Recorder, answer, answers, connect, ended, feed, until

pytestmark = pytest.mark.timeout(10)

_SLOW_IDLE = Limits(header_timeout=0.2, keepalive_timeout=30, body_timeout=5, send_timeout=30)
#: no deadline a loaded machine could reach while a test that is not about them runs
_ROOMY = Limits(header_timeout=30, keepalive_timeout=30, body_timeout=30, send_timeout=30)


@pytest.mark.parametrize("before", [
    GET,                                                                  # no body
    b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",       # a sized body
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
])
@pytest.mark.parametrize("answer_now", [True, False])
@pytest.mark.parametrize("tail", [b"G", b"\r\nGE", b"GET "])
async def test_a_second_head_begun_in_the_read_that_ends_a_request_has_its_deadline(
        before: bytes, answer_now: bool, tail: bytes) -> None:
    """Slowloris: the first bytes of a second request (its method, not yet its target) in
    the read that ends the previous one, then nothing. The head's deadline is
    header_timeout from those bytes, not keepalive_timeout."""
    h = Recorder(answer_now=answer_now)
    proto, tr, _ = connect(h, limits=_SLOW_IDLE)
    loop = asyncio.get_running_loop()
    feed(proto, GET)
    answer(h.seen[0]) if not answer_now else None
    t0 = loop.time()
    feed(proto, before + tail)
    if not answer_now:
        answer(h.seen[1])
    await until(lambda: tr.aborted, timeout=2)
    assert loop.time() - t0 < 1.0
    assert len(answers(tr.out)) == 2


_PIPELINE = (b"\r\n" + GET
             + b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabG"
             + b"\r\n\r\n"
             + b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
             + b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"
             + b"GET /v HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
             + b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
             + GET.replace(b"/a", b"/z"))
_EXPECTED = [b"GET /a ", b"POST /s abG", b"POST /c abc", b"HEAD /h ", b"GET /v ",
             b"POST /e hi", b"GET /z "]


@pytest.mark.parametrize("answer_now", [True, False])
async def test_a_pipeline_split_in_two_reads_at_every_offset_is_answered_the_same(
        answer_now: bool) -> None:
    """Where each request begins no longer has a parser callback of its own: every split of
    one pipeline (empty lines, sized, chunked with a trailer, HEAD, HTTP/1.0 kept alive,
    100-continue) in two reads gives the same requests, versions and answers."""
    for cut in range(1, len(_PIPELINE)):
        h = Recorder(answer_now=answer_now)
        proto, tr, _ = connect(h, limits=_ROOMY)  # (0.3 s deadlines: a CI run reached one)
        feed(proto, _PIPELINE[:cut])
        feed(proto, _PIPELINE[cut:])
        while len(answers(tr.out.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""))) < 7:
            if not answer_now:
                await until(lambda: h.seen and not h.seen[-1].responded)  # noqa: B023
                req = h.seen[-1]
                if req.body_done:
                    answer(req)
                else:
                    body = b"".join([c async for c in req.rest(0, 100)])
                    answer(req, req.method + b" " + req.target + b" " + body)
            else:
                await asyncio.sleep(0.001)
        got = answers(tr.out.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""))
        assert got == _EXPECTED, cut
        assert [r.http10 for r in h.seen] == [False] * 4 + [True] + [False] * 2, cut
        assert not tr.closed, cut
        starts = [r.started for r in h.seen]
        assert starts == sorted(starts), cut


@pytest.mark.parametrize("bad, why", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", b"more than one Host"),
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", b"malformed"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", b"upgrades"),
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", b"upgrades"),
])
async def test_a_refused_request_after_a_good_one_split_at_every_offset(bad: bytes,
                                                                       why: bytes) -> None:
    data = GET + b"\r\n" + bad + GET
    for cut in range(1, len(data)):
        h = Recorder()
        proto, tr, server = connect(h)
        feed(proto, data[:cut])
        feed(proto, data[cut:])
        await until(lambda: ended(tr))  # noqa: B023
        assert answers(tr.out[:tr.out.index(b"HTTP/1.1 400")]) == [b"GET /a "], cut
        assert why in tr.out and server.counts == ["malformed"], cut
        assert len(h.seen) == 1, cut


async def test_one_byte_of_a_second_head_in_a_read_of_its_own_is_cut_at_header_timeout() -> None:
    h = Recorder()
    proto, tr, _ = connect(h, limits=_SLOW_IDLE)
    loop = asyncio.get_running_loop()
    feed(proto, GET)
    t0 = loop.time()
    feed(proto, b"G")
    await until(lambda: tr.aborted, timeout=2)
    assert loop.time() - t0 < 1.0 and answers(tr.out) == [b"GET /a "]


@pytest.mark.parametrize("empty", [b"\r" * 10 + b"\n", b"\n" * 12, b"\r\n" * 6])
async def test_a_long_read_of_empty_lines_between_requests_begins_no_head(empty: bytes) -> None:
    """llhttp skips CR and LF before a request line, however many: a read of them between
    requests leaves the connection idle (keepalive_timeout, not header_timeout)."""
    h = Recorder()
    proto, tr, _ = connect(h, limits=Limits(header_timeout=0.1, keepalive_timeout=30,
                                            body_timeout=5, send_timeout=30))
    feed(proto, GET)
    feed(proto, empty)
    await asyncio.sleep(0.3)  # past header_timeout
    assert not tr.closed and proto.parsing is None
    feed(proto, GET.replace(b"/a", b"/b"))
    assert answers(tr.out) == [b"GET /a ", b"GET /b "]


_REFUSED_HEADS = {
    "upgrade": b"Upgrade: websocket\r\nConnection: upgrade\r\n",
    "version": None,  # (the request line says HTTP/2.0)
    "no host": b"",
    "alias": b"X_Forwarded_For: 1.2.3.4\r\n",
    "long field": b"X-Long: " + b"a" * 9000 + b"\r\n",
    "huge head": b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(9)),
}


@pytest.mark.parametrize("what", sorted(_REFUSED_HEADS))
@pytest.mark.parametrize("method", [b"HEAD", b"GET"])
async def test_a_refused_head_request_gets_a_head_without_content(what: str,
                                                                  method: bytes) -> None:
    """The connection's own refusals (dispatch._refuse, a callback's Refuse, an overlong
    head) answered HEAD with its JSON body too (found by review revattack9): an answer to
    HEAD has no content (RFC 9112 §6.3); a client reads the next answer where its head
    ends. The head keeps the body's length, as a GET's; GET still gets the body."""
    fields = _REFUSED_HEADS[what]
    line = method + (b" /a HTTP/2.0\r\n" if fields is None else b" /a HTTP/1.1\r\n")
    host = b"" if what == "no host" else b"Host: x\r\n"
    h = Recorder()
    proto, tr, _ = connect(h)
    proto.data_received(line + host + (fields or b"") + b"\r\n")
    out = bytes(tr.out)
    head, sep, body = out.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 400 "), out[:200]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert length > 0 and not h.seen
    assert body == (b"" if method == b"HEAD" else body[:length]) and (
        method == b"HEAD" or len(body) == length), (what, out[:300])
