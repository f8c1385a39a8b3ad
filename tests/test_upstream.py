"""dataplane/exchange.py and upstream.py without sockets: an Exchange fed fragmented answers on a fake
transport, driven both ways (awaited by a coroutine, or telling a sink), and its pool."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.dataplane.answerparsing import HIGH_WATER, MAX_ANSWER_HEAD
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.upstream import Pool
from gateway.errors import (
    UpstreamClosed,
    UpstreamProtocolError,
    UpstreamQueueTimeout,
    UpstreamTimeout,
)
from tests.conftest import wait_until


class FakeTransport(asyncio.Transport):
    def __init__(self, ex: Exchange) -> None:
        super().__init__()
        self.ex = ex
        self.out = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.ex.connection_lost, None)


def pool() -> Pool:
    return Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)


def exchange(p: Pool | None = None, head: bool = False) -> tuple[Exchange, FakeTransport]:
    p = p or pool()
    ex = Exchange(p)
    tr = FakeTransport(ex)
    ex.connection_made(tr)
    p.open += 1
    ex.begin(asyncio.get_running_loop().time() + 5, 5, head)
    return ex, tr


def feed(ex: Exchange, data: bytes, step: int) -> None:
    for i in range(0, len(data), step or len(data)):
        ex.data_received(data[i:i + (step or len(data))])


async def read_all(ex: Exchange) -> bytes:
    out = b""
    while chunk := await ex.read():
        out += chunk
    return out


ANSWERS = {
    "sized": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"hello", True),
    "1xx-first": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
    "no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    "close-delimited": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"", False),
}


@pytest.mark.parametrize("name", list(ANSWERS))
@pytest.mark.parametrize("step", [0, 1, 5])
async def test_fragmented_answers_are_read_whole(name: str, step: int) -> None:
    payload, body, keep = ANSWERS[name]
    ex, tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, payload, step)
    if name == "close-delimited":
        tr.abort()  # the backend's FIN ends such a body
        await ex.read_head()
        assert await read_all(ex) == b"until the end"
        return
    await ex.read_head()
    assert ex.status in (200, 204)
    assert all(n != b"Link" for n, _ in ex.headers)  # a 1xx answer's fields are gone
    assert await read_all(ex) == body
    assert ex.complete and ex.keep_alive is keep


@pytest.mark.parametrize("payload, error", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", UpstreamProtocolError),
    (b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", UpstreamProtocolError),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
     UpstreamProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", UpstreamClosed),
    # a coding before chunked: de-chunked, gzip bytes would reach the client as identity
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
     UpstreamProtocolError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", UpstreamProtocolError),
])
async def test_broken_answers_fail_the_exchange(payload: bytes, error: type) -> None:
    ex, tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, payload, 0)
    if error is UpstreamClosed:
        tr.abort()
    with pytest.raises(error):
        await ex.read_head()
        await read_all(ex)
    assert not ex.keep_alive or ex.error is not None


async def test_a_head_answer_ends_at_its_head() -> None:
    """llhttp cannot be told of HEAD (it waits for the 1234 bytes announced): the answer
    ends at its head, and a connection whose answer to HEAD announced a body is never used
    again (a late body would be read as the next answer: review 8)."""
    p = pool()
    ex, _ = exchange(p, head=True)
    await ex.send(b"HEAD / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 0)
    await ex.read_head()
    assert ex.complete and ex.length == 1234 and await ex.read() == b""
    assert not ex.keep_alive


async def test_an_empty_head_answer_keeps_its_connection_and_a_fresh_parser_reads_on() -> None:
    p = pool()
    ex, _ = exchange(p, head=True)
    await ex.send(b"HEAD / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    assert ex.complete and ex.keep_alive  # (review 7: a connection per HEAD used up ports)
    p.release(ex)
    assert p.take_idle() is ex
    ex.begin(asyncio.get_running_loop().time() + 5, 5, False)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0)
    await ex.read_head()
    assert ex.complete and await read_all(ex) == b"ok" and ex.keep_alive


@pytest.mark.parametrize("after", [b"abc", b"0\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"])
async def test_a_body_after_an_empty_head_answer_closes_the_connection(after: bytes) -> None:
    p = pool()
    ex, tr = exchange(p, head=True)
    await ex.send(b"HEAD / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    assert ex.complete and ex.keep_alive
    feed(ex, after, 0)  # (late: its bytes, or another answer's; no telling)
    assert not ex.keep_alive and tr.is_closing()


class Sink:
    def __init__(self) -> None:
        self.steps: list[tuple[bool, bool, int, bool]] = []

    def upstream(self, ex: Exchange) -> None:
        self.steps.append((ex.headers_done, ex.complete, ex.buffered, ex.error is not None))


async def test_a_sink_is_told_of_every_step_and_the_sweeper_watches_it() -> None:
    p = pool()
    ex, tr = exchange(p)
    sink = Sink()
    ex.begin_drive(sink, b"GET / HTTP/1.1\r\n\r\n", ex.deadline, ex.idle, False)
    assert bytes(tr.out) == b"GET / HTTP/1.1\r\n\r\n" and ex in p.waiting
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", 0)
    feed(ex, b"cd", 0)
    # told once per arrival (not per parser step): the head and 2 bytes, then the end
    assert sink.steps == [(True, False, 2, False), (True, True, 4, False)]
    assert ex.take_body() == b"abcd"
    p.release(ex)  # a complete keep-alive answer: pooled, and no longer watched
    assert ex.sink is None and ex not in p.waiting and p.take_idle() is ex


async def test_a_sinks_exchange_times_out_through_the_sweeper() -> None:
    p = pool()
    ex, _ = exchange(p)
    ex.idle = 0.0
    sink = Sink()
    ex.begin_drive(sink, b"GET / HTTP/1.1\r\n\r\n", ex.deadline, ex.idle, False)
    ex._on_timer()  # what the sweeper does for an exchange past its wait_until
    assert sink.steps[-1][3] and isinstance(ex.error, UpstreamTimeout)


async def test_reading_pauses_past_high_water_and_resumes_when_read() -> None:
    ex, tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (HIGH_WATER * 4), 0)
    await ex.read_head()
    for _ in range(5):
        feed(ex, b"x" * (HIGH_WATER // 4), 0)
    assert tr.paused
    assert len(await ex.read()) == 5 * (HIGH_WATER // 4)
    assert not tr.paused


async def test_pool_take_idle_and_release() -> None:
    p = pool()
    assert p.take_idle() is None
    ex, _ = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    p.release(ex)
    assert p.take_idle() is ex and ex.status == 0  # reset for its next exchange
    ex.keep_alive = False
    p.release(ex)  # not reusable: closed, not pooled
    assert p.take_idle() is None


async def test_an_answer_taken_whole_after_reading_paused_resumes_reading() -> None:
    """An answer that ends in the read that pushed the buffer past the high water mark
    (reading paused), taken whole (`take_body`, the one-write path): reading goes on before
    the connection is pooled, else the next answer on it never arrives."""
    p = pool()
    ex, tr = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    body = b"z" * (HIGH_WATER + 1)
    feed(ex, b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body, 0)
    await ex.read_head()
    assert ex.complete and tr.paused
    assert ex.take_body() == body
    assert not tr.paused and not ex.read_paused
    p.release(ex)
    assert p.take_idle() is ex and not tr.paused


# --------------------------------------------------------------------------- hostile backends
# (review of the data plane: each case below failed before its fix)


async def test_a_1xx_answers_framing_fields_do_not_frame_the_final_answer() -> None:
    """A 103 carrying Content-Length: 5 before a final answer delimited by the close: the
    final answer has no length (its body is read to the end), never the 1xx's 5 (which,
    forwarded, told the client 5 bytes and sent it 11: the rest read as another answer)."""
    ex, tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n"
             b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world", 0)
    await ex.read_head()
    assert ex.status == 200 and ex.length is None
    tr.abort()  # the backend's FIN ends the body
    assert await read_all(ex) == b"hello world"


@pytest.mark.parametrize("step", [0, 7])
async def test_a_second_answer_in_the_same_bytes_is_not_merged_into_the_first(step: int) -> None:
    """A backend answers once and then again (a 204 with a 'body' that is an answer, or two
    answers at once): the first answer is the exchange's, with its own status and fields;
    the rest is never read as part of it, and the connection is not reused."""
    p = pool()
    ex, tr = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 204 No Content\r\nX-First: 1\r\nContent-Length: 39\r\n\r\n"
             b"HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 2\r\n\r\nhi", step)
    await ex.read_head()
    assert ex.status == 204 and [n for n, _ in ex.headers] == [b"X-First", b"Content-Length"]
    assert ex.complete and await read_all(ex) == b""
    assert not ex.keep_alive and tr.closed
    p.release(ex)
    assert p.take_idle() is None


async def test_an_idle_pooled_connection_that_speaks_is_closed() -> None:
    """Bytes from a backend on an idle keep-alive connection (an unsolicited 408, or the
    head of an answer to nothing): the connection is closed, never handed a request whose
    answer would be read as the rest of those bytes."""
    p = pool()
    ex, tr = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0)
    await ex.read_head()
    assert await read_all(ex) == b"ok"
    p.release(ex)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 0)
    await asyncio.sleep(0)
    assert tr.closed and p.take_idle() is None


@pytest.mark.parametrize("status", [b"099", b"000", b"600", b"999"])
async def test_a_status_outside_100_599_is_malformed(status: bytes) -> None:
    """llhttp takes any three digits; an answer with a status HTTP does not have would be
    forwarded as an invalid status line."""
    ex, _ = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nok", 0)
    with pytest.raises(UpstreamProtocolError):
        await ex.read_head()


async def _body(parts: list[bytes], gate: asyncio.Event | None = None):  # type: ignore[no-untyped-def]
    for i, part in enumerate(parts):
        if gate is not None and i == 1:
            await gate.wait()
        yield part


async def test_a_backend_that_stops_taking_the_body_is_timed_out() -> None:
    """A backend that never reads the request body: the write side pauses, and the wait
    for it to resume is under the exchange's idle deadline like any other wait (it was
    awaited with none: the request, its client and its Task hung for ever)."""
    p = pool()
    ex, tr = exchange(p)
    ex.idle = 0.05

    def write(data: Any) -> None:  # a backend whose window is shut
        tr.out += data
        ex.pause_writing()

    tr.write = write  # type: ignore[method-assign]
    sending = asyncio.ensure_future(ex.send(b"POST / HTTP/1.1\r\n\r\n", _body([b"a", b"b"]),
                                            chunked=True))
    await asyncio.sleep(0.01)
    assert not sending.done() and ex in p.waiting  # watched by the deadline sweeper
    ex._on_timer()  # what the sweeper does past wait_until
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(sending, 1)


async def test_a_request_not_sent_whole_never_goes_back_to_the_pool() -> None:
    """The backend answers before the request body is all sent (a 413 while the upload
    streams): sending stops, and although the answer is complete and keep-alive, the
    connection is not reused, since the backend still waits for the rest of that body and
    would read the next request as body bytes."""
    p = pool()
    ex, tr = exchange(p)
    gate = asyncio.Event()
    sending = asyncio.ensure_future(ex.send(
        b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\n", _body([b"abc", b"def"], gate)))
    await asyncio.sleep(0.01)
    feed(ex, b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n", 0)
    gate.set()
    await sending
    await ex.read_head()
    assert ex.status == 413 and ex.complete and not tr.out.endswith(b"def")
    p.release(ex)
    assert p.take_idle() is None and tr.closed


@pytest.mark.parametrize("step", [0, 1, 5])
async def test_every_answer_of_an_exchange_is_checked_for_its_http_version(step: int) -> None:
    """The first answer's version is read from its first bytes (no parser call); the final
    answer after a 1xx, and the answer of a reused connection, are checked as well."""
    ex, _ = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", step)
    with pytest.raises(UpstreamProtocolError, match=r"HTTP/2\.0"):
        await ex.read_head()
    p = pool()
    ex, _ = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx", step)
    await ex.read_head()
    assert ex.status == 200 and await read_all(ex) == b"x"
    p.release(ex)
    again = p.take_idle()
    assert again is ex
    again.begin(asyncio.get_running_loop().time() + 5, 5, False)
    await again.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(again, b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n", step)
    with pytest.raises(UpstreamProtocolError):
        await again.read_head()


@pytest.mark.parametrize("lead", [b"", b"\n", b"\r\n", b"\r\n\r\n\r\n"])
@pytest.mark.parametrize("step", [0, 1, 7])
async def test_an_answers_version_is_read_wherever_its_status_line_begins(
        lead: bytes, step: int) -> None:
    """The version read from the answer's first bytes by index (bytes 5 and 7,
    `Exchange.data_received`): empty lines before the status line, or a first read too
    short to hold the version, leave it to the parser's answer; HTTP/1.1 and 1.0 pass,
    HTTP/2.0 and 0.9 fail, wherever the line begins."""
    for version, ok in ((b"1.1", True), (b"1.0", True), (b"2.0", False), (b"0.9", False)):
        ex, _ = exchange()
        await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
        feed(ex, lead + b"HTTP/%s 200 OK\r\nContent-Length: 1\r\n\r\nx" % version, step)
        if ok:
            await ex.read_head()
            assert ex.status == 200 and await read_all(ex) == b"x", version
        else:
            with pytest.raises(UpstreamProtocolError, match="HTTP/" + version.decode()):
                await ex.read_head()


@pytest.mark.parametrize("shape", ["many fields", "one endless value", "endless 1xx heads"])
@pytest.mark.parametrize("step", [4096, 65536])
async def test_an_answer_head_over_the_limit_fails_the_exchange(shape: str, step: int) -> None:
    """llhttp bounds no head: past MAX_ANSWER_HEAD (the interim 1xx heads count too) the
    exchange fails at once, where it read on for as long as the backend sent."""
    ex, tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    if shape == "many fields":
        head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%05d: %s\r\n" % (i, b"a" * 90)
                                                 for i in range(2000))
    elif shape == "one endless value":
        head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 200_000
    else:
        head = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" * 10_000
    fed = 0
    for i in range(0, len(head), step):
        if tr.closed:
            break
        ex.data_received(head[i:i + step])
        fed = i + step
    assert tr.closed and fed <= MAX_ANSWER_HEAD + step
    with pytest.raises(UpstreamProtocolError, match="answer head is over 64 KiB"):
        await ex.read_head()


@pytest.mark.parametrize("step", [0, 1, 7])
async def test_a_head_just_under_the_limit_and_a_large_body_in_one_read_are_taken(
        step: int) -> None:
    """The bytes of the read that ends the head are not all head: a body in the same read
    does not count against the limit."""
    ex, _ = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * (MAX_ANSWER_HEAD - 200) + b"\r\n"
    body = b"b" * 300_000
    feed(ex, head + b"Content-Length: %d\r\n\r\n" % len(body) + body, step or 0)
    await ex.read_head()
    assert ex.status == 200
    assert await read_all(ex) == body


@pytest.mark.parametrize("step", [0, 1, 3])
async def test_a_chunked_answers_trailer_is_not_part_of_its_head(step: int) -> None:
    """Trailer fields (RFC 9110 §6.5.1) are dropped: never merged into the head the client
    gets, nor into the fields the gateway reads (a Set-Cookie or Content-Type there)."""
    ex, _ = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
             b"2\r\n{}\r\n0\r\nSet-Cookie: s=1\r\nContent-Type: text/event-stream\r\n\r\n",
         step)
    await ex.read_head()
    assert await read_all(ex) == b"{}"
    assert ex.headers == [(b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain")]
    assert b"Set-Cookie" not in b"".join(ex.lines) and not ex.general


async def test_a_kill_drops_what_the_backend_sent_that_the_client_has_not_got() -> None:
    """A stream read slowly by its client holds up to HIGH_WATER of the backend's bytes (the
    backend paused); a kill that cuts it forwards none of them: the next read is the kill."""
    from gateway.dataplane.inflight import Aborted, Handle

    ex, tr = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0)
    await ex.read_head()
    chunk = b"x" * 65536
    for _ in range(5):
        ex.data_received(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert ex.buffered > HIGH_WATER and tr.paused
    h = Handle("r")
    h.exchange = ex
    h.abort(Aborted("killed", "version"))
    with pytest.raises(Aborted):
        await ex.read()
    assert tr.closed


@pytest.mark.parametrize("value, forwarded", [
    (b"http://127.0.0.1:9/v2/models/iris/", b"/v2/models/iris/"),
    (b"HTTP://127.0.0.1:9/a?b=1", b"/a?b=1"),
    (b"http://127.0.0.1:9", b"/"),
    (b"http://127.0.0.1:9?x", b"/?x"),
    (b"/relative", b"/relative"),
    (b"http://127.0.0.1:90/other-port", b"http://127.0.0.1:90/other-port"),
    (b"http://127.0.0.1:9.evil.example/", b"http://127.0.0.1:9.evil.example/"),
    (b"https://cdn.example/x", b"https://cdn.example/x"),
])
@pytest.mark.parametrize("name", [b"Location", b"content-location"])
@pytest.mark.parametrize("step", [0, 5])
async def test_a_url_naming_the_backends_own_address_is_made_relative(
        value: bytes, forwarded: bytes, name: bytes, step: int) -> None:
    """The gateway sends the backend its own address as Host, so a redirect it builds from
    that Host names it; as nginx's `proxy_redirect default`, that origin is taken out (the
    client follows the path to the gateway). Other URLs pass as they came."""
    ex, _ = exchange()
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 307 Temporary Redirect\r\n" + name + b": " + value
         + b"\r\nContent-Length: 0\r\n\r\n", step)
    await ex.read_head()
    assert ex.headers == [(name, forwarded), (b"Content-Length", b"0")]
    assert b"".join(ex.lines) == name + b": " + forwarded + b"\r\n"


@pytest.mark.parametrize("value, forwarded", [
    (b"http://127.0.0.1:9/base/v2/models/iris/", b"/v2/models/iris/"),
    (b"http://127.0.0.1:9/base", b"/"),
    (b"http://127.0.0.1:9/base?x=1", b"/?x=1"),
    (b"http://127.0.0.1:9/basement/x", b"http://127.0.0.1:9/basement/x"),  # not under it
    (b"http://127.0.0.1:9/Base/x", b"http://127.0.0.1:9/Base/x"),  # paths keep their case
    (b"http://127.0.0.1:9/other", b"http://127.0.0.1:9/other"),
])
async def test_a_url_under_the_versions_base_path_is_made_relative_to_it(
        value: bytes, forwarded: bytes) -> None:
    """A version at `http://host:port/base` gets `/base` + the client's path: a URL the
    backend builds under `/base` maps back to the client's path; one outside it cannot, and
    passes as it came."""
    ex, _ = exchange()
    ex.begin(asyncio.get_running_loop().time() + 5, 5, False, b"/base")
    await ex.send(b"GET /base/x HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + value
         + b"\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    assert ex.headers[0] == (b"Location", forwarded)


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_is_cancelled_and_passes_it_on(
        ) -> None:
    """A request waiting for a busy pool's connection is handed one and cancelled (its
    client left, a kill cut it) in the same loop turn. Python 3.11's wait_for returned the
    connection and dropped the cancel: the request went on to the backend for nobody. The
    waiter now ends cancelled, and the connection goes back to the pool."""
    p = Pool("http", "127.0.0.1", 9, 1, asyncio.get_running_loop(), set(), 8)
    ex, _ = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    waiter = asyncio.create_task(p.acquire(5))
    await wait_until(lambda: p._waiters, 5, interval=0, what="the request to queue")
    p.release(ex)  # handed to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert p.take_idle() is ex and not p._waiters


async def test_a_waiter_whose_wait_ends_as_it_is_handed_a_connection_passes_it_on() -> None:
    """A request waiting for a busy pool's connection is handed one in the loop turn its
    wait runs out. asyncio.timeout (8c3ce96) then raises TimeoutError with the connection
    in the waiter's future, and it was dropped: never idle, never closed, still counted in
    `open`, so each such race shrank the pool for good (at max_conns, every request then
    queued until its timeout). (3.11's wait_for returned the connection.) The waiter ends
    with its timeout, and the connection goes back to the pool."""
    loop = asyncio.get_running_loop()
    p = Pool("http", "127.0.0.1", 9, 1, loop, set(), 8)
    ex, _ = exchange(p)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    waiter = asyncio.create_task(p.acquire(0.2))
    await wait_until(lambda: p._waiters, 5, interval=0, what="the request to queue")
    loop.call_later(0.1, p.release, ex)  # handed over before the wait's end is due ...
    # ... and its wait's end: both due in one loop turn, as the loop is held past them (not
    # a wait for something to happen, but what makes the two callbacks run together)
    time.sleep(0.3)  # noqa: ASYNC251
    with pytest.raises(UpstreamQueueTimeout):
        await waiter
    assert p.open == 1 and p.take_idle() is ex and not p._waiters


@pytest.mark.parametrize("lead", [b"", b"\r\n"])
@pytest.mark.parametrize("step", [0, 1, 6])
async def test_an_answer_in_rtsp_or_ice_fails_the_exchange(lead: bytes, step: int) -> None:
    """llhttp parses "RTSP/1.0 200" and "ICE/1.0 200" answers as HTTP/1.0 (its version
    says 1.0; the index read of bytes 5 and 7 took "RTSP/1.0" as "HTTP/1.0" too), first
    or after a 1xx head, and said nothing of it: the answer was proxied as HTTP (found by
    review revattack9). HTTP answers, with 1xx heads before them, still pass."""
    final = b" 200 OK\r\nContent-Length: 1\r\n\r\nx"
    for proto, ok in ((b"RTSP/1.0", False), (b"ICE/1.0", False), (b"HTTP/1.0", True)):
        for before in (b"", b"HTTP/1.1 100 Continue\r\n\r\n",
                       b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\r\n"):
            ex, _ = exchange()
            await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
            feed(ex, lead + before + proto + final, step)
            if ok:
                await ex.read_head()
                assert ex.status == 200 and await read_all(ex) == b"x", (proto, before)
            else:
                with pytest.raises(UpstreamProtocolError, match="another protocol"):
                    await ex.read_head()
    ex, _ = exchange()  # (a 1xx in another protocol before an HTTP answer: failed too)
    await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
    feed(ex, lead + b"RTSP/1.0 100 Continue\r\n\r\nHTTP/1.1" + final, step)
    with pytest.raises(UpstreamProtocolError, match="another protocol"):
        await ex.read_head()
