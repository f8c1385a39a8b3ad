"""One connection to a model backend and the exchange it carries: HTTP/1.1 on httptools
(llhttp, strict), driven by a coroutine (`read_head`, `read`: `awaiting.py`, a base) or
telling a `Sink` of each step from its callbacks (the fast path: no Task; begun, handed
over and ended through `driving.py`, a base). Owns the connection's state and its socket
callbacks. Socket and parser errors leave only as gateway.errors.Upstream* (`delivered`:
whether a request byte was sent). Its pool is a `Home`. Each answer field is classified as
it is parsed (the parser callbacks: `answerparsing.py`, a base).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import httptools

from gateway.dataplane.answerheads import HEAD_MAX, Fields, look
from gateway.dataplane.answerparsing import MAX_ANSWER_HEAD, BadAnswer
from gateway.dataplane.awaiting import Body
from gateway.dataplane.clock import Clock
from gateway.dataplane.driving import Driving, Sink
from gateway.errors import (
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = ["Body", "Exchange", "Home", "Sink"]

log = logging.getLogger("killgate.upstream")


class Home(Protocol):
    """The pool of an exchange (`upstream.Pool`) as the exchange sees it: the set its deadline
    sweeper scans, where the exchange goes back, and the hook told of a closed connection."""

    loop: asyncio.AbstractEventLoop
    clock: Clock
    waiting: set[Exchange]
    origins: tuple[bytes, ...]  # "scheme://host[:port]" of the backend (answerparsing)

    def release(self, ex: Exchange) -> None: ...

    def _lost(self, ex: Exchange) -> None: ...


class Exchange(Driving, asyncio.Protocol):
    """One pooled connection; carries one request/response exchange at a time (awaited
    through `Awaiting`'s coroutines, or telling a `Sink`: begun and ended through
    `Driving`'s methods)."""

    # Slots, not a dict: an instance dict holds at most 30 names in the keys it shares
    # with the other instances (CPython 3.11); past that it becomes a dict of its own,
    # and every attribute read and write of the hot path becomes a lookup in it. (The ones
    # `Awaiting`'s coroutines write are its slots, the answer's that the parser callbacks
    # write `AnswerParsing`'s, what `begin` sets `Driving`'s.)
    __slots__ = (
        "_write_paused",
        "clock",
        "closed",
        "error",
        "fast",
        "feeding",
        "full",
        "got_bytes",
        "head_bytes",
        "loop",
        "parser",
        "pool",
        "pooled_at",
        "transport",
    )
    pool: Home

    def __init__(self, pool: Home) -> None:
        self.sink: Sink | None = None
        self.feeding = False
        self.woke = False
        self.pool = pool
        self.loop = pool.loop
        self.clock = pool.clock
        self.transport: asyncio.Transport | None = None
        self.begins = []  # (`AnswerParsing.on_message_begin`: llhttp's callback, set first)
        self.on_message_begin = self.begins.pop
        # llhttp with a call per field (`on_header`), and without, for heads seen before
        # (answerheads.py): `parser` is the one the answer in progress is fed to
        self.parser = self.full = httptools.HttpResponseParser(self)
        self.fast = httptools.HttpResponseParser(Fields(self))
        self.head_key: bytes | None = None  # (a head to remember once parsed)
        self.head_misses = self.head_pause = 0  # (answerheads.py)
        self.closed = False
        self._write_paused = False
        self._chunked_out = False
        self.uses = 0
        self.pooled_at = 0.0  # when it last went back to its pool idle (clock.now)
        # What no answer leaves behind on a connection that goes back to its pool (the pool
        # takes one only complete, kept alive, without error, body read whole and request
        # sent whole), and what `begin`/`begin_drive` set before any use: written here once.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        # the bytes of an answer's heads, kept when its first read does not show one final
        # "HTTP/1.x" head at its start (`data_received`): each head's protocol is checked
        # (`AnswerParsing._heads_checked`, which drops them at the final head)
        self.heads_read: bytearray | None = None
        self.heads_seen = 0  # where in them the next head begins
        self.unsent = False  # a request body not sent whole (the backend answered first)
        self.head_at = 0.0  # when the answer's head arrived (loop clock; read only after)
        self.head = False
        self.base = b""
        self.trailing = self.trail_fresh = False  # (a chunked answer's: `on_chunk_header`)
        self.stale = False  # (the parser of an answer to HEAD: `on_headers_complete`)
        self.trailer_bytes = 0
        self.deadline = 0.0
        self.idle = 0.0
        self.wait_until = 0.0
        self._reset()

    def _reset(self) -> None:
        """Ready for the next exchange: what the last answer set (the state of a new
        connection, tests/test_exchange_reuse.py)."""
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.lines: list[bytes] = []  # the forwarded fields as head parts (`answer_head`)
        self.dated = False  # a Date field was among them
        self.general = False  # a field only `response_head` handles (Connection, Via, SSE)
        self.length: int | None = None  # the answer's Content-Length
        self.headers_done = False
        self.complete = False
        self.got_bytes = False
        self.head_bytes = 0  # bytes read while the head was not complete (1xx heads too)
        self.keep_alive = False
        self._framed = False
        self.framing = self.body_total = self.nchunks = 0  # (a chunked answer's: `_framed_by`)
        # its answer's first message is welcome (the last answer's took its item: an
        # exchange is reset new, or pooled only complete)
        self.begins.append(None)
        self.parser = self.full
        if self.stale:  # the last answer was to HEAD: its parser still waits for a body
            self.stale = False
            self.parser = self.full = httptools.HttpResponseParser(self)

    # ------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.got_bytes:  # the answer's first bytes: its status line begins here
            # One final HTTP/1.1 or 1.0 head: an answer llhttp parses begins "HTTP/", "RTSP/"
            # or "ICE/", a digit, ".", a digit (after any CR or LF, which is never an "H"),
            # and it takes versions 0.9, 1.0, 1.1 and 2.0 alone (tests/test_answer_status_
            # line.py holds it to that); so an "H" at byte 0 and a "1" at byte 5 are HTTP/1.0
            # or 1.1, and byte 9 is the status's first digit (one space after the version:
            # llhttp refuses two), a "1" for a 1xx (another head follows). Anything else, a
            # short read too, keeps the heads' bytes: their versions and protocols are
            # checked as each ends (`_heads_checked`). (By index, in compares that jump,
            # which 3.11 specialises: an `and` of them assigned to a name costs ~90 CPU
            # instructions more a term, `startswith` with a tuple ~900.)
            # A final head whole in this read, seen before byte for byte (answerheads.py):
            # parsed without a call per field, classified as the first time.
            try:
                if data[0] != 72 or data[5] != 49 or data[9] == 49:
                    self.heads_read = bytearray()
                    self.heads_seen = 0
                elif self.head_pause:  # (its heads kept missing: none looked up for a while)
                    self.head_pause -= 1
                elif not self.head and 0 < (end := data.find(b"\r\n\r\n")) <= HEAD_MAX:
                    look(self, data, end)
            except IndexError:
                self.heads_read = bytearray()
                self.heads_seen = 0
        self.got_bytes = True
        self.clock.now = now = self.loop.time()
        sink = self.sink
        if sink is not None:  # no waits to stamp: the idle deadline moves on here
            until = now + self.idle
            self.wait_until = until if until < self.deadline else self.deadline
            self.feeding = True  # the sink hears once, after these bytes (head, body, end)
        if not self.headers_done:
            self.head_bytes += len(data)
            if self.heads_read is not None:  # (bounded: MAX_ANSWER_HEAD fails the answer)
                self.heads_read += data
            body = -1
        else:  # (in a chunked answer's body: its framing is counted, `_framed_by`)
            body = self.body_total if self.nchunks and not self.complete else -1
        try:
            self.parser.feed_data(data)
            if not self.headers_done and self.head_bytes > MAX_ANSWER_HEAD:
                # (checked after the feed: one read may end the head and begin the body)
                self.fail(UpstreamProtocolError(
                    f"the backend's answer head is over {MAX_ANSWER_HEAD // 1024} KiB"))
            elif self.trailing:
                self._open_trailer(len(data))
            if body >= 0 and not self.complete and self.error is None:
                self._framed_by(len(data) - (self.body_total - body))
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamProtocolError("backend switched protocols; upgrades are not proxied"))
        except httptools.HttpParserError as exc:
            if self.complete:
                # Bytes after a complete answer (a 204's "body", a second answer, anything
                # on an idle pooled connection): the answer stands, the bytes are never
                # read as part of it or of the next one, and the connection is not reused.
                self.keep_alive = False
                if self.transport is not None:
                    self.transport.abort()
            else:
                cause = exc.__context__
                if cause is not None and not isinstance(cause, BadAnswer):
                    # a callback of ours failed (a bug), not the backend's bytes: logged, or
                    # only a backend error would ever show it (a 502, failovers, alerts)
                    log.error("answer_parse_failed", exc_info=cause)
                self.fail(UpstreamProtocolError(
                    str(cause) if isinstance(cause, BadAnswer)
                    else f"malformed response from backend: {exc}"))
        finally:
            if sink is not None:
                self.feeding = False
                if self.woke:
                    self.woke = False
                    if self.sink is not None:
                        self.sink.upstream(self)

    def _open_trailer(self, n: int) -> None:
        """A read that ends inside a trailer section or a chunk header: httptools holds
        an open field until its end, growing it by a copy per read, so a read spent wholly
        inside the section counts here (its complete fields count as they are parsed)."""
        if self.trail_fresh:
            self.trail_fresh = False  # (the section began in this read)
            return
        self.trailer_bytes += n
        if self.trailer_bytes > MAX_ANSWER_HEAD:
            self.fail(UpstreamProtocolError(
                f"a chunk header or the trailer section of the backend's answer is over "
                f"{MAX_ANSWER_HEAD // 1024} KiB"))

    def eof_received(self) -> bool:
        # The backend closed its side: `connection_lost` comes a loop turn later, and until
        # then a pooled connection would look usable (`take_idle`) to a request read in this
        # turn, which would meet the close with no answer (a POST: a 502). Never reused now.
        self.keep_alive = False
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # (a close or reset is a socket event that brings no bytes: what it leads to, a 502
        # or a failover, is stamped now, not at the last bytes; once per connection)
        self.clock.now = self.loop.time()
        if self.headers_done and not self.complete and not self._framed and not self.error \
                and exc is None:
            # Body delimited by connection close (no length, not chunked): EOF ends it (a
            # clean end only: a reset, `exc`, cuts it, and it fails as any cut answer does)
            self.complete = True
            self.keep_alive = False
        elif not self.complete and self.error is None:
            self.error = err = UpstreamClosed("backend closed the connection"
                                              + (" mid-response" if self.headers_done else ""))
            err.mid_answer = self.headers_done
        self._wake()
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)  # (a send waiting for the backend to take the body)

    # ------------------------------------------------------------ internals

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            if not w.done():
                w.set_result(None)
        elif self.sink is not None:
            if self.feeding:
                self.woke = True
            else:
                self.sink.upstream(self)

    def fail(self, exc: UpstreamError) -> None:
        """Stop this exchange with `exc` (also used to abort it from outside: kills)."""
        if self.error is None:
            self.error = exc
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _on_timer(self) -> None:
        phase = "total" if self.loop.time() >= self.deadline - 0.001 else "idle"
        self.fail(UpstreamTimeout(phase, delivered=True))
