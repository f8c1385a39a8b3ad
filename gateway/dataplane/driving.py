"""How a flight drives an exchange (`exchange.Exchange`, a base of it, over its parser
callbacks and coroutines): begun for a coroutine (`begin`) or for the fast path
(`begin_drive`: the whole request written, a `Sink` told of each step of the answer from
the connection's callbacks), handed to a coroutine (`detach`), its body taken, and the
connection handed back to its pool or closed. No parsing, no socket callbacks of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from gateway.dataplane.answerparsing import AnswerParsing
from gateway.errors import UpstreamClosed

__all__ = ["Driving", "Sink"]


class Sink(Protocol):
    def upstream(self, ex: Any) -> None:
        """The exchange (`ex`, the `exchange.Exchange`) moved on: its head, body bytes, its
        end, or an error arrived."""


class _Pool(Protocol):
    waiting: set[Any]  # (the exchanges waiting on a backend, which the sweeper scans)
    origins: tuple[bytes, ...]  # "scheme://host[:port]" of the backend (answerparsing)

    def release(self, ex: Any) -> None: ...


class Driving(AnswerParsing):
    """Begin, hand over and end `Exchange`'s exchanges (see the module docstring); what
    they set for an exchange (and its callbacks read) is their slots."""

    __slots__ = ("base", "deadline", "head", "idle", "sink", "uses")
    sink: Sink | None  # the fast path's, told of each step (None: a coroutine reads)
    uses: int  # exchanges this connection has carried

    # the exchange's state they read and write (Exchange's)
    pool: _Pool
    transport: asyncio.Transport | None
    closed: bool

    def begin(self, deadline: float, idle: float, head: bool, base: bytes = b"") -> None:
        """`base`: the version's base path, which a URL the backend builds begins with."""
        self.uses += 1
        self.deadline = deadline
        self.idle = idle
        self.head = head
        self.base = base

    def begin_drive(self, sink: Sink, data: bytes, deadline: float, idle: float,
                    head: bool, base: bytes = b"") -> None:
        """`begin`, then send a whole request and tell `sink` of every step of the answer
        (no coroutine: the fast path's); the deadline sweeper watches it meanwhile."""
        self.uses += 1
        self.deadline = deadline
        self.idle = idle
        self.head = head
        self.base = base
        self.sink = sink
        until = self.clock.now + idle
        self.wait_until = until if until < deadline else deadline
        self.pool.waiting.add(self)
        tr = self.transport
        if tr is None or self.closed:
            self.fail(UpstreamClosed("connection closed before sending"))
            return
        tr.write(data)

    def detach(self) -> None:
        """No sink any more: a coroutine takes over (streaming), or the exchange is done."""
        self.sink = None
        self.pool.waiting.discard(self)

    def take_body(self) -> bytes:
        """The whole body when it has already arrived (complete and small)."""
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self.read_paused and self.transport:  # (as `read`: the buffer is empty again;
            self.read_paused = False  # a connection pooled paused would never answer again)
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def finish(self) -> bytes:
        """`take_body`, then `release` (the fast path's end of a complete answer, in one
        call): the whole body; the connection goes back to its pool, or is closed."""
        chunks = self.chunks
        if chunks:
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.chunks = []
            self.buffered = 0
            if self.read_paused and self.transport:  # (as `take_body`)
                self.read_paused = False
                self.transport.resume_reading()
        else:
            body = b""
        self.pool.release(self)
        return body

    def release(self) -> None:
        """Hand the connection back: pooled if reusable, else closed."""
        self.pool.release(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
