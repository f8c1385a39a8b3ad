"""dataplane/deadlines.py without sockets (the fake transport of tests/test_protocol.py): the
idle and head deadlines of a connection that is still sending an answer its client has not
taken yet. (From a hostile review; each failed before its fix.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.dataplane.protocol import HttpProtocol, Limits
from tests.test_protocol import (
    GET,
    FakeServer,
    FakeTransport,
    Recorder,
    answer,
    answers,
    until,
)

pytestmark = pytest.mark.timeout(30)

# keep-alive and head deadlines far shorter than the time the client takes to read its answer
LIMITS = Limits(header_timeout=0.3, keepalive_timeout=0.3, body_timeout=0.3, send_timeout=0.6)


class Flushing(FakeTransport):
    """A transport whose client takes what is written slowly (`unsent` bytes still held);
    a close waits until they are taken, as a real one does."""

    def __init__(self, proto: HttpProtocol) -> None:
        super().__init__(proto)
        self.close_asked = False

    def is_closing(self) -> bool:
        return self.close_asked or self.closed

    def close(self) -> None:
        self.close_asked = True
        if not self.unsent:
            super().close()

    def taken(self, n: int) -> None:
        """The client took `n` more bytes of what it was sent."""
        self.unsent = max(0, self.unsent - n)
        if not self.unsent and self.close_asked and not self.closed:
            super().close()


def connect(limits: Limits = LIMITS) -> tuple[HttpProtocol, Flushing, Any]:
    server = FakeServer(Recorder(), limits)
    proto = HttpProtocol(server, asyncio.get_running_loop())  # type: ignore[arg-type]
    tr = Flushing(proto)
    proto.connection_made(tr)
    return proto, tr, server


async def _drip(tr: Flushing, step: int, every: float) -> None:
    """The client reads what it was sent, `step` bytes at a time: slowly, but all the time."""
    while tr.unsent and not tr.aborted:
        await asyncio.sleep(every)
        tr.taken(step)


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
async def test_an_answer_still_being_taken_is_not_cut_by_an_idle_or_head_deadline(
        close: bool) -> None:
    """A connection whose answer is written but still in its transport's buffer (a slow
    link: a 200 KB answer at 20 KB/s) is not idle: it was aborted at `keepalive_timeout`
    after the answer was handed to the transport (kept alive), or at the head's
    `header_timeout` (`Connection: close`), cutting the answer short while its client was
    reading it steadily; for an answer that ends with the connection the cut even reads
    as its end. nginx starts keepalive_timeout once the answer is sent, and holds a client
    taking its answer to `send_timeout` between writes."""
    proto, tr, _ = connect()
    feed = GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") if close else GET
    tr.unsent = 120_000  # (what its answer leaves in the transport's buffer, say)
    proto.data_received(feed)
    assert answers(tr.out) == [b"GET /a "]
    # the client takes its answer over ~1.2 s: 4 keep-alive / head deadlines, 2 send ones
    await _drip(tr, 10_000, 0.1)
    assert not tr.aborted, "the answer was cut while its client was taking it"
    if close:
        await until(lambda: tr.closed)  # closed once taken, as asked
        assert not tr.aborted
    else:  # then idle: closed at keepalive_timeout (and a send_timeout's look at most)
        await asyncio.sleep(0.2)
        assert not tr.closed
        await until(lambda: tr.aborted, LIMITS.keepalive_timeout + LIMITS.send_timeout + 0.5)


async def test_an_answer_its_client_stops_taking_is_dropped_at_send_timeout() -> None:
    """The same answer's client stops reading with part of it still held (below the
    transport's high-water mark: no pause_writing, so no send timer of its own): it is
    dropped once it has taken nothing for about `send_timeout`, never kept for ever."""
    proto, tr, server = connect()
    loop = asyncio.get_running_loop()
    tr.unsent = 50_000
    proto.data_received(GET)
    t0 = loop.time()
    await until(lambda: tr.aborted, 3.0)
    took = loop.time() - t0
    assert LIMITS.send_timeout - 0.05 <= took <= LIMITS.keepalive_timeout + 2 * LIMITS.send_timeout
    assert server.counts == ["send_timeout"]


async def test_an_answer_its_client_takes_a_little_a_look_is_dropped_below_the_min_rate(
        ) -> None:
    """The same answer's rest (below the high-water mark, the connection idle) taken a few
    bytes at a time: progress at every look, so `send_timeout` alone kept it (and the
    answer's bytes) for as long as the client dripped, 50 KB at 500 bytes/s here for 100 s
    (a slow-read attack: a byte a minute at the defaults). Below `body_min_rate` (1024
    bytes/s) once `send_timeout` has passed since its first look: dropped, counted."""
    proto, tr, server = connect()
    tr.unsent = 50_000
    proto.data_received(GET)
    drip = asyncio.ensure_future(_drip(tr, 50, 0.1))
    try:
        await until(lambda: tr.aborted, 3.0)
    finally:
        drip.cancel()
    assert server.counts == ["send_timeout"]
    assert tr.unsent > 40_000


async def test_a_later_answer_taken_steadily_is_judged_on_its_own() -> None:
    """A client taking the rest of one answer (idle: `_sending` looks at it) sends its next
    request, whose answer leaves more in the transport: the next idle deadline begins a new
    look, not the old one's (more held than at its last look read as no progress)."""
    proto, tr, server = connect()
    tr.unsent = 50_000
    proto.data_received(GET)
    await until(lambda: proto.paused_at, 3.0)  # the first look at the rest, idle
    tr.taken(10_000)
    proto.data_received(GET)
    assert answers(tr.out) == [b"GET /a ", b"GET /a "]
    tr.unsent += 60_000  # its answer
    await _drip(tr, 10_000, 0.1)  # steadily
    assert not tr.aborted and not server.counts


async def test_a_closing_connection_its_client_stops_reading_is_not_held_for_ever() -> None:
    """An answer that ends its connection (`Connection: close`) given after every deadline
    of the request had passed (a slow backend: no timer left), whose client then stops
    reading with part of it still in the transport: the transport's close waits for those
    bytes to be taken, and nothing else ended the connection, which stayed open (and
    counted against max_connections) for as long as the client cared to hold it."""
    server = FakeServer(Recorder(answer_now=False), LIMITS)
    proto = HttpProtocol(server, asyncio.get_running_loop())  # type: ignore[arg-type]
    tr = Flushing(proto)
    proto.connection_made(tr)
    proto.data_received(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    await asyncio.sleep(LIMITS.header_timeout + 0.2)  # the backend is slow
    tr.unsent = 30_000
    answer(server.handler.seen[0])
    assert tr.close_asked and not tr.closed
    await until(lambda: tr.aborted, LIMITS.send_timeout * 2 + 0.5)


@pytest.mark.parametrize("trickle", [False, True], ids=["on-time", "trickled"])
async def test_a_pipelined_small_body_is_timed_from_its_turn_and_cut_when_it_trickles(
        trickle: bool) -> None:
    """A small body (read whole before its request goes on) is whole within body_timeout
    of its head, or 408 (`deadlines.py`); for a request pipelined behind one still being
    answered, reading is paused, so its body's time runs from when its turn comes (reading
    resumes), not from its head: then on time it is answered (and not reclaimable at
    max_connections), trickling it is cut."""
    server = FakeServer(Recorder(answer_now=False), LIMITS)
    proto = HttpProtocol(server, asyncio.get_running_loop())  # type: ignore[arg-type]
    tr = Flushing(proto)
    proto.connection_made(tr)
    proto.data_received(GET + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
    assert tr.paused  # (the POST waits for its turn)
    await asyncio.sleep(LIMITS.body_timeout + 0.2)  # the first answer is slow
    answer(server.handler.seen[0])
    assert not tr.paused and not tr.closed
    assert proto.spare() is None  # (its turn has just begun: on pace, not reclaimable)
    for piece in (b"c", b"d", b"e", b"f"):
        if tr.closed:
            break
        await asyncio.sleep(0.2 if trickle else 0.02)  # 0.8 s in all, or 0.08 s
        proto.data_received(piece)
    if trickle:
        await until(lambda: len(answers(tr.out)) == 2)
        assert b"408 Request Timeout" in tr.out and b" of 6 bytes came" in tr.out
        await until(lambda: tr.closed)
    else:
        await until(lambda: len(server.handler.seen) == 2)
        answer(server.handler.seen[1])
        assert answers(tr.out)[1] == b"POST /b abcdef"
