"""dataplane/exchange.py and upstream.py: a pooled connection taken by the fast path
(`Pool.take_idle`, whose `Exchange._reset` writes only what an answer leaves behind) starts
its next exchange in the same state as a new connection, whatever the last answer was.
Fake transports, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.dataplane.awaiting import Awaiting
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.upstream import Pool

# per connection, not per exchange: what a reused one keeps by design (and `head_at`, the
# last head's time, is written when the next head arrives, and read only after that; its
# two parsers, `full` and `fast`, are made with it, and how its heads were found, answerheads)
_CONNECTION = {"pool", "loop", "clock", "transport", "parser", "uses", "sink", "head_at",
               "pooled_at", "full", "fast", "head_misses", "head_pause"}

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n{}",
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nVia: 1.0 x\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: keep-alive, x-a\r\n"
    b"X-A: 1\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
]


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = b""

    def write(self, data: Any) -> None:
        self.out = data

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Sink:
    def __init__(self) -> None:
        self.told = 0

    def upstream(self, ex: Exchange) -> None:
        self.told += 1


def state(ex: Exchange) -> dict[str, Any]:
    # (slots: no instance dict; `heads_read` is AnswerParsing's: `heads_seen` and
    # `trail_fresh` there are set anew before they are read, the others as Exchange's)
    names = (*Exchange.__slots__, *Awaiting.__slots__, "heads_read")
    assert not hasattr(ex, "__dict__")
    return {k: getattr(ex, k) for k in names if k not in _CONNECTION}


@pytest.mark.parametrize("last", range(len(ANSWERS)))
async def test_a_reused_connection_starts_as_a_new_one(last: int) -> None:
    loop = asyncio.get_running_loop()
    p = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    ex = Exchange(p)
    ex.connection_made(Transport())
    p.open = 1
    deadline = loop.time() + 5
    ex.begin_drive(Sink(), b"GET / HTTP/1.1\r\n\r\n", deadline, 5, False)
    ex.data_received(ANSWERS[last])
    assert ex.complete and ex.keep_alive and ex.error is None
    ex.detach()
    assert ex.finish() == {0: b"{}", 1: b"ok", 2: b"", 3: b"", 4: b"no!"}[last]
    assert p.idle == [ex]
    taken = p.take_idle()
    assert taken is ex and not p.idle
    sink = Sink()
    ex.begin_drive(sink, b"GET / HTTP/1.1\r\n\r\n", deadline, 5, False)
    new = Exchange(p)
    new.connection_made(Transport())
    new.begin_drive(sink, b"GET / HTTP/1.1\r\n\r\n", deadline, 5, False)
    assert state(ex) == state(new)
    ex.data_received(ANSWERS[0])  # and the next answer is read as on a new connection
    new.data_received(ANSWERS[0])
    assert state(ex) == state(new) and ex.complete and ex.take_body() == b"{}"
    assert sink.told == 2


async def test_an_answer_cut_mid_body_is_not_pooled() -> None:
    loop = asyncio.get_running_loop()
    p = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    ex = Exchange(p)
    ex.connection_made(Transport())
    p.open = 1
    ex.begin_drive(Sink(), b"GET / HTTP/1.1\r\n\r\n", loop.time() + 5, 5, False)
    ex.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    ex.detach()
    assert ex.finish() == b"ab" and not ex.complete
    assert p.idle == [] and p.take_idle() is None
