"""dataplane/exchange.py's classification of an answer's fields as they are parsed, and
headers.answer_head built from it: the same bytes as headers.response_head's pass over the
fields, and the same framing as before, on random field lists fed in random fragments."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest

from gateway.dataplane.exchange import Exchange
from gateway.dataplane.headers import answer_head, response_head
from gateway.dataplane.upstream import Pool

FIELDS: list[tuple[bytes, list[bytes]]] = [
    (b"Content-Type", [b"application/json", b"text/plain", b"text/event-stream",
                       b"TEXT/Event-Stream; charset=utf-8", b"text/event-strea",
                       b"application/json; charset=utf-8"]),
    (b"content-type", [b"text/event-stream", b"text/html"]),
    (b"Date", [b"Mon, 01 Jan 2024 00:00:00 GMT"]),
    (b"dATE", [b"Tue, 02 Jan 2024 00:00:00 GMT"]),
    (b"Connection", [b"keep-alive", b"close", b"x-a", b"keep-alive, X-A", b"date, via"]),
    (b"Via", [b"1.0 edge", b"1.1 other, 1.0 more"]),
    (b"Keep-Alive", [b"timeout=5"]),
    (b"Trailer", [b"x-t"]),
    (b"Proxy-Authenticate", [b"Basic"]),
    (b"x-killgate-route", [b"spoofed"]),
    (b"X-KillGate-Decision", [b"spoofed"]),
    (b"Cache-Control", [b"max-age=5", b"no-store"]),
    (b"X-Accel-Buffering", [b"yes"]),
    (b"Set-Cookie", [b"a=1", b"b=2"]),
    (b"x-a", [b"1", b""]),
    (b"X-A", [b"2"]),
    (b"Server", [b"uvicorn"]),
    (b"ETag", [b'"abc"']),
]


def _answer(rng: random.Random) -> tuple[bytes, list[tuple[bytes, bytes]], str]:
    """A random answer's bytes, its fields in order, and how it is framed."""
    fields = [(n, rng.choice(vs)) for n, vs in
              (rng.choice(FIELDS) for _ in range(rng.randrange(0, 9)))]
    framing = rng.choice(["length", "length", "chunked", "none"])
    body = b"x" * rng.randrange(0, 40)
    if framing == "length":
        fields.insert(rng.randrange(len(fields) + 1),
                      (rng.choice([b"Content-Length", b"content-length"]), b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        fields.insert(rng.randrange(len(fields) + 1), (b"Transfer-Encoding", b"chunked"))
        payload = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        payload = b""
    status = rng.choice([200, 201, 206, 299, 404, 500, 599]) if framing != "none" else \
        rng.choice([204, 304])
    head = b"".join(b"%s: %s\r\n" % f for f in fields)
    data = b"HTTP/1.1 %d X\r\n%s\r\n%s" % (status, head, payload)
    if rng.random() < 0.2:  # an informational answer first, with fields of its own
        early = rng.sample([(b"Link", b"</x>"), (b"Connection", b"x-a"), (b"Date", b"d"),
                            (b"Content-Length", b"7"), (b"Content-Type", b"text/event-stream")],
                           rng.randrange(0, 4))
        data = b"HTTP/1.1 103 Early Hints\r\n%s\r\n%s" % (
            b"".join(b"%s: %s\r\n" % f for f in early), data)
    return data, fields, framing


class Transport(asyncio.Transport):
    def write(self, data: Any) -> None: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@pytest.mark.parametrize("seed", range(3))
async def test_answer_head_is_response_head_when_no_field_needs_it(seed: int) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    p = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    seen = {"answer_head": 0, "response_head": 0}
    for _ in range(2000):
        data, fields, framing = _answer(rng)
        ex = Exchange(p)
        ex.connection_made(Transport())
        ex.begin(loop.time() + 5, 5, False)
        cut = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1)))
        for a, b in zip([0, *cut], [*cut, len(data)], strict=True):
            ex.data_received(data[a:b])
        assert ex.error is None and ex.headers == fields, data
        if framing == "none":
            ex.connection_lost(None)  # (a 204/304 is complete at its head: this is a no-op)
        assert ex.complete
        # the framing as the exchange judged it field by field before this classification
        lengths = [v for n, v in fields if n.lower() == b"content-length"]
        assert ex.length == (int(lengths[-1]) if lengths else None)
        assert ex._framed == (framing != "none" or ex.status in (204, 304))
        ours = rng.choice([b"", b"x-killgate-route: r\r\n"])
        length = rng.choice([None, 0, 17, 4095, 4096, 123_456])
        connection = rng.choice([None, b"close", b"keep-alive", b"upgrade"])
        body = rng.choice([b"", b"{}"])
        general = response_head(ex.status, ex.headers, ours, length, connection, body=body)
        if ex.general:
            seen["response_head"] += 1
            continue
        seen["answer_head"] += 1
        fast = answer_head(ex.status, ex.lines, ex.dated, ours, length, connection,
                           loop.time(), body)
        # (each adds a date line of its own when the backend gave none: the second may
        # have turned between the two; compared without it)
        assert _undated(fast) == _undated(general), data
    assert min(seen.values()) > 200, seen  # both kinds of answer were drawn


def _undated(head: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", head)


@pytest.mark.parametrize("value", [b"text/event-stream", b"Text/Event-Stream;charset=utf-8"])
async def test_an_event_stream_or_a_connection_field_takes_the_general_head(value: bytes) -> None:
    loop = asyncio.get_running_loop()
    p = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    for fields, general in [(b"Content-Type: %s\r\n" % value, True),
                            (b"Content-Type: application/json\r\n", False),
                            (b"Connection: x-a\r\nX-A: 1\r\n", True),
                            (b"Via: 1.0 edge\r\n", True)]:
        ex = Exchange(p)
        ex.connection_made(Transport())
        ex.begin(loop.time() + 5, 5, False)
        ex.data_received(b"HTTP/1.1 200 OK\r\n%bContent-Length: 0\r\n\r\n" % fields)
        assert ex.complete and ex.general is general, fields
