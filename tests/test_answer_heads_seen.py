"""dataplane/answerheads.py: an answer head seen before byte for byte is parsed by llhttp
without field callbacks and classified from the first sight, into the same state as a head
parsed field by field; llhttp still judges the framing; what may not be kept (a Location, a
transfer coding, a field only `response_head` handles, an answer to HEAD, a 1xx first)
never is; a connection whose heads keep missing stops looking for a while. Fake transports,
no sockets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from gateway.dataplane.answerheads import MISSES, PAUSE, SEEN, SEEN_MAX
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.upstream import Pool

# (name, values, whether a head with it may be kept)
FIELDS: list[tuple[bytes, list[bytes], bool]] = [
    (b"Content-Type", [b"application/json", b"text/plain; charset=utf-8"], True),
    (b"content-type", [b"text/event-stream"], False),  # (an event stream: general)
    (b"Date", [b"Mon, 01 Jan 2024 00:00:00 GMT"], True),
    (b"Server", [b"uvicorn", b"ength: 12"], True),
    (b"X-Length", [b"5"], True),
    (b"Set-Cookie", [b"a=1", b"b=2"], True),
    (b"Keep-Alive", [b"timeout=5"], True),
    (b"Connection", [b"keep-alive", b"close"], False),
    (b"Via", [b"1.0 edge"], False),
    (b"Location", [b"http://127.0.0.1:9/x", b"/y"], False),
    (b"X-KillGate-Route", [b"spoofed"], True),
]


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def write(self, data: Any) -> None: ...

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _exchange(p: Pool, head: bool = False) -> Exchange:
    ex = Exchange(p)
    ex.connection_made(Transport())
    ex.begin(asyncio.get_running_loop().time() + 5, 5, head)
    return ex


def _state(ex: Exchange) -> dict[str, Any]:
    return {"status": ex.status, "headers": ex.headers, "lines": b"".join(ex.lines),
            "dated": ex.dated, "general": ex.general, "length": ex.length,
            "framed": ex._framed, "keep_alive": ex.keep_alive, "complete": ex.complete,
            "error": repr(ex.error), "body": b"".join(ex.chunks),
            "aborted": ex.transport.aborted}  # type: ignore[union-attr]


def _by_fields(p: Pool, data: bytes, head: bool = False) -> dict[str, Any]:
    """What the exchange makes of `data` field by field (a first read of 3 bytes: never
    looked up, never kept)."""
    ex = _exchange(p, head)
    ex.data_received(data[:3])
    ex.data_received(data[3:])
    assert ex.parser is ex.full
    return _state(ex)


def _answer(fields: list[tuple[bytes, bytes]], body: bytes, status: int = 200,
            length: bytes | None = None) -> bytes:
    head = b"".join(b"%s: %s\r\n" % f for f in fields)
    return b"HTTP/1.1 %d X\r\n%s\r\n%s" % (
        status, head.replace(b"{n}", length if length is not None else b"%d" % len(body)), body)


@pytest.mark.parametrize("seed", range(3))
async def test_a_head_seen_again_is_parsed_as_field_by_field(seed: int) -> None:
    rng = random.Random(seed)
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    fast = 0
    for _ in range(400):
        chosen = [rng.choice(FIELDS) for _ in range(rng.randrange(0, 6))]
        fields = [(n, rng.choice(vs)) for n, vs, _ in chosen]
        keepable = all(k for _, _, k in chosen)
        spelling = rng.choice([b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
        fields.insert(rng.randrange(len(fields) + 1), (spelling, b"{n}"))
        status = rng.choice([200, 201, 404, 500, 204])
        SEEN.clear()
        body = b"" if status == 204 else b"x" * rng.randrange(0, 2000)
        other = b"" if status == 204 else body + b"y"
        # the same answer twice, then one of another length (another head)
        for sight, data in enumerate([_answer(fields, body, status)] * 2
                                     + [_answer(fields, other, status)]):
            ex = _exchange(p)
            ex.data_received(data)
            assert _state(ex) == _by_fields(p, data), data
            again = sight == 1 or (sight == 2 and status == 204)  # (a 204's has no body)
            assert (ex.parser is ex.fast) == (keepable and again), data
            assert bool(SEEN) == keepable, data
            fast += ex.parser is ex.fast
    assert fast > 50, fast


async def test_llhttp_still_judges_a_seen_heads_framing() -> None:
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    fields = [(b"Content-Type", b"application/json"), (b"Content-Length", b"{n}")]
    _exchange(p).data_received(_answer(fields, b"{}"))  # (seen)
    cases = [
        (_answer(fields, b"{}") + b"HTTP/1.1 200 OK\r\n\r\n", True),  # a second answer after it
        (_answer(fields, b"{}", length=b"5"), True),  # a body cut short (more to come)
        (_answer(fields, b"{}", length=b"9" * 18), True),  # a long one
        (_answer(fields, b"abcdef", length=b"3"), True),  # bytes after the body
        # a length llhttp refuses: never kept (it reaches no callback, and the head fails)
        (_answer(fields, b"{}", length=b"9" * 25), False),
    ]
    for data, seen in cases:
        _exchange(p).data_received(data)  # (seen: its head, whatever follows it)
        ex = _exchange(p)
        ex.data_received(data)
        assert (ex.parser is ex.fast) == seen, data
        assert _state(ex) == _by_fields(p, data), data
    data = _answer(fields, b"x" * 100)
    _exchange(p).data_received(data)  # (seen)
    ex = _exchange(p)  # the body over several reads
    ex.data_received(data[:80])
    assert ex.parser is ex.fast and not ex.complete
    ex.data_received(data[80:])
    assert ex.complete and ex.error is None and b"".join(ex.chunks) == b"x" * 100


@pytest.mark.parametrize("data", [
    # a Location (made relative when it names the backend: per backend, not per bytes)
    b"HTTP/1.1 200 OK\r\nLocation: http://127.0.0.1:9/x\r\nContent-Length: 2\r\n\r\n{}",
    # no length (until the close)
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n{}",
    # a transfer coding with a length (refused, or chunked: its trailer reaches `on_header`)
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    # 1xx first
    b"HTTP/1.1 103 Early\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    # a field only `response_head` handles
    b"HTTP/1.1 200 OK\r\nVia: 1.0 x\r\nContent-Length: 2\r\n\r\n{}",
])
async def test_what_may_not_be_kept_never_is(data: bytes) -> None:
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    SEEN.clear()
    for _ in range(2):
        ex = _exchange(p)
        ex.data_received(data)
        if b"HTTP/1.1 200 OK\r\nX-A" in data:
            ex.connection_lost(None)  # (the end of an answer without a length)
        assert ex.parser is ex.full and not SEEN
        assert ex.complete or ex.error is not None


async def test_an_answer_to_head_is_parsed_field_by_field() -> None:
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    data = b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 0\r\n\r\n"
    _exchange(p).data_received(data)  # (seen)
    ex = _exchange(p, head=True)
    ex.data_received(data)
    assert ex.parser is ex.full and ex.stale
    assert _state(ex) == _by_fields(p, data, head=True)


async def test_seen_heads_are_bounded() -> None:
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    SEEN.clear()
    for i in range(SEEN_MAX + 50):
        _exchange(p).data_received(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % i)
        assert 0 < len(SEEN) <= SEEN_MAX


async def test_each_answer_gets_its_own_length_among_the_fields() -> None:
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    SEEN.clear()
    fields = [(b"Content-Length", b"{n}"), (b"X-A", b"1")]
    for body in [b"ab", b"abc", b"ab", b"abcd", b"abc"]:  # (the first sight's length again)
        ex = _exchange(p)
        ex.data_received(_answer(fields, body))
        assert ex.headers == [(b"Content-Length", b"%d" % len(body)), (b"X-A", b"1")]
        assert ex.length == len(body) and b"".join(ex.chunks) == body


async def test_a_connection_whose_heads_keep_missing_stops_looking_for_a_while() -> None:
    p = Pool("http", "127.0.0.1", 9, 4, asyncio.get_running_loop(), set(), 8)
    SEEN.clear()
    ex = _exchange(p)
    seen = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def answer(data: bytes) -> bool:
        """`data` answered on the connection; whether its head was found."""
        ex.data_received(data)
        assert ex.complete and ex.error is None
        found = ex.parser is ex.fast
        ex._reset()
        ex.got_bytes = False
        return found

    assert not answer(seen) and answer(seen)  # (seen, then found)
    for i in range(MISSES):  # a request id in every head: each one new
        assert not answer(b"HTTP/1.1 200 OK\r\nX-Id: %d\r\nContent-Length: 0\r\n\r\n" % i)
    assert len(SEEN) == MISSES + 1
    assert [answer(seen) for _ in range(PAUSE)] == [False] * PAUSE  # not looked up
    assert len(SEEN) == MISSES + 1
    assert answer(seen)  # looked up again


# answers one connection may carry, one after another (`%d`: a body length 0-3)
_SEQUENCE_HEADS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: %d\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nSet-Cookie: s=%d\r\n\r\n",
    b"HTTP/1.1 404 OK\r\nContent-Length: %d\r\n\r\n",
    b"HTTP/1.1 304 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 103 E\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nLocation: http://127.0.0.1:9/q\r\n\r\n",
]


@pytest.mark.parametrize("seed", range(2))
async def test_one_connection_switching_parsers_answers_as_one_that_never_looks(
        seed: int) -> None:
    """One connection's answers, one after another (the two parsers taking turns, a HEAD's
    parser made anew between them, 1xx first, heads split across reads, a CRLF after a
    body): each answer's state is the same as on a connection that never looks a head up,
    and a Set-Cookie is only ever its own answer's."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    p = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    weights = [8, 5, 2, 1, 1, 1, 1]
    fast = 0
    for _ in range(150):
        SEEN.clear()
        looks, never = _exchange(p), _exchange(p)
        never.head_pause = 10**9
        for _ in range(20):
            form = rng.choices(_SEQUENCE_HEADS, weights)[0]
            n, cookie = rng.randrange(4), rng.randrange(3)
            head = form % ((n, cookie)[:form.count(b"%d")])
            to_head = rng.random() < 0.05
            if b"chunked" in head:
                body = b"%x\r\n%s\r\n0\r\nT: 1\r\n\r\n" % (n, b"z" * n) if n else b"0\r\n\r\n"
            else:
                body = b"" if b" 304 " in head or to_head else b"y" * n
            data = head + body + (b"\r\n" if rng.random() < 0.1 else b"")
            cut = rng.randrange(1, len(data)) if rng.random() < 0.3 else len(data)
            for ex in (looks, never):
                ex._reset()
                ex.got_bytes = False
                ex.begin(loop.time() + 5, 5, to_head)
                ex.data_received(data[:cut])
                if cut < len(data):
                    ex.data_received(data[cut:])
            fast += looks.parser is looks.fast
            assert _state(looks) == _state(never), data
            if b"Set-Cookie" in head:
                assert (b"Set-Cookie", b"s=%d" % cookie) in looks.headers, data
            else:
                assert all(name != b"Set-Cookie" for name, _ in looks.headers), data
            if not (looks.complete and looks.keep_alive) or looks.error is not None:
                break  # (never pooled again)
            for ex in (looks, never):
                ex.chunks, ex.buffered = [], 0
    assert fast > 100, fast
