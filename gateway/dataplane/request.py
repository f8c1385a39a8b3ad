"""One request on a data-plane connection: its head, its body as it arrives, its answer.

Owns the request side of `dataplane/protocol.py`'s contract with the proxy: the head as
parsed (method, target and fields as raw bytes, never decoded unless routing reads them:
`headerview.py`, whose `HeaderView` and `BadHeader` are part of this interface),
the body (in memory, or read as it comes with flow control and its deadline), and the answer
(one write for a complete one; head, chunks and an end, or an abort, for a stream). The
connection decides keep-alive and the order of answers; the proxy only answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from gateway.dataplane.headerview import BadHeader, HeaderView

__all__ = ["BadBody", "BadHeader", "BodyTimeout", "BodyTooLarge", "ClientGone", "Connection",
           "HeaderView", "OverBudget", "RefusedBody", "Request"]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyTooLarge(Exception):
    """The body exceeds `server.max_body_size` (413)."""


class BodyTimeout(Exception):
    """The client stopped sending its body for `server.body_timeout` (408)."""


class BadBody(Exception):
    """The body's framing broke (a malformed chunk): 400, and the connection closes."""


class RefusedBody(BadBody):
    """The body, well framed, was refused as it streamed: a multipart body named its `model`
    twice (`formscan.py`). 400 `model_body`, and the backend connection is closed."""


class OverBudget(Exception):
    """A body read to find its `model` would hold more than `server.model_peek_memory`."""


class ClientGone(ConnectionError):
    """The client closed or reset its connection before the request was over."""


class Connection(Protocol):
    """The connection a request is on, as the request and the proxy see it
    (`protocol.HttpProtocol`: declared here so that this module needs nothing above it)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    remote: str | None
    remote_b: bytes  # the peer's address as bytes (b"unknown" when there is none)
    fwd_host: bytes | None  # the Host whose x-forwarded-* lines `fwd_lines` are
    fwd_lines: bytes  # (`outgoing.Outgoing._forwarded_of`'s, for this connection)
    # the target and Host of the last request routed here (`Proxy.handle` compares them
    # first): the target split for routing and forwarding, the Host as routing reads it
    last_target: bytes
    last_split: tuple[str, bytes]
    last_host: bytes | None
    last_route_host: str
    closing: bool  # closes once the answer in progress is written
    closed: bool
    write_paused: bool  # the client is not reading: wait (`drain`) before sending more
    linger_end: float  # < 0: no lingering close (`closing.py`: a client too slow for us)

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def abort(self) -> None: ...

    def finished(self, req: Request) -> None:
        """`req`'s answer is written: the next request may go (or the connection closes)."""

    def reading_body(self, req: Request) -> None:
        """`req`'s body is being waited for: read, and watch the body deadline."""

    def body_taken(self, req: Request) -> None:
        """Buffered body bytes of `req` were taken: reading may resume."""


class Request:
    """A request and its answer. Made by the connection at the start of a head:
    `Request().begin(conn, now)`."""

    __slots__ = ("_headers", "body_done", "body_error", "body_size", "buffered", "chunked",
                 "chunks", "conn", "content_length", "continue_sent", "dispatched",
                 "expect_continue", "flight", "host", "http10", "keep_alive", "kept",
                 "last_body", "method", "out_chunked", "raw_headers", "rec", "refused",
                 "reread", "responded", "span", "started", "target", "traceparent", "waiter")

    # (no Python `__init__`: it would be called from C, which costs more than `begin`, a
    # method called from Python code; `object.__init__` is C)
    __init__ = object.__init__

    def begin(self, conn: Connection, now: float) -> Request:
        """A request on `conn` whose first bytes came at `now` (this request, made ready)."""
        self.conn = conn
        self.started = now
        self.method = b""
        self.target = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        # the parts (name, ": ", value, CRLF) of the fields forwarded as they are, in order
        # (sorted by the parser: `wire.name_kind`), unless `reread`: a Connection or Proxy-
        # Connection field other than `keep-alive` or `close` alone, or a Via or Close
        # field, came, and the backend's head is built from all of `raw_headers` again
        # (and llhttp is asked whether the connection is kept alive: `headrules.head_field`)
        self.kept: list[bytes] = []
        self.reread = False
        self._headers: HeaderView | None = None  # made when something reads a field by name
        self.host: bytes | None = None
        self.traceparent: bytes | None = None  # the first such field (read by tracing only)
        self.http10 = False
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.continue_sent = False
        self.refused: tuple[int, str] | None = None  # the connection answers it, then closes
        # body
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.body_size = 0
        self.body_done = False
        self.body_error: BaseException | None = None
        self.last_body = now
        self.waiter: asyncio.Future[None] | None = None
        # answer
        self.dispatched = False
        self.responded = False  # the answer's head has been written
        self.out_chunked = False
        self.flight: object | None = None  # the proxy's (told when the client goes away)
        self.rec: Any = None  # the proxy's telemetry record of this request
        self.span: Any = None  # its trace span, when tracing sampled it
        return self

    # ------------------------------------------------------------------ head

    @property
    def headers(self) -> HeaderView:
        """The fields as text, by name (most requests are routed without it)."""
        view = self._headers
        if view is None:
            view = self._headers = HeaderView(self.raw_headers)
        return view

    @property
    def remote(self) -> str | None:
        return self.conn.remote

    @property
    def path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    # ------------------------------------------------------------------ body

    def body(self) -> bytes:
        """The whole body, when it has all arrived (`body_done`)."""
        chunks = self.chunks
        if not chunks:
            return b""
        if len(chunks) > 1:
            self.chunks = chunks = [b"".join(chunks)]
        return chunks[0]

    def _take(self) -> bytes:
        chunks, self.chunks = self.chunks, []
        self.buffered = 0
        self.conn.body_taken(self)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _more(self) -> None:
        """Wait for body bytes (or its end, or its failure)."""
        if self.expect_continue and not self.continue_sent and not self.responded:
            self.continue_sent = True
            self.conn.write(CONTINUE)
        fut = self.conn.loop.create_future()
        self.waiter = fut
        self.conn.reading_body(self)
        try:
            await fut
        finally:
            self.waiter = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read_prefix(self, limit: int, max_body: int,
                          charge: Callable[[int], bool] | None = None) -> bytes | None:
        """Up to about `limit` bytes of the body (all of it when shorter); None when more
        than `max_body` bytes arrive first. What is read stays to be replayed. `charge`
        is told what is held as it grows (False: more than may be held, `OverBudget`)."""
        while not self.body_done and self.buffered < limit:
            if self.body_error is not None:
                raise self.body_error
            if self.body_size > max_body:
                return None
            if charge is not None and not charge(self.buffered):
                raise OverBudget
            await self._more()
        if self.body_size > max_body:  # (also a body all in: a chunked one is not checked
            return None  # at its head)
        if charge is not None and not charge(self.buffered):
            raise OverBudget
        return self.body()

    async def rest(self, already: int, max_body: int) -> AsyncIterator[bytes]:
        """The body after the `already` bytes taken as a prefix, as it arrives. A wake that
        brought nothing (`wake` from elsewhere: the backend answered while the client's body
        is stalled) yields b'', so that its reader can look up."""
        skip = already  # the prefix is still at the start of what is buffered
        n = already
        while True:
            if self.chunks:
                data = self._take()
                if skip:
                    data, skip = data[skip:], max(0, skip - len(data))
                if not data:
                    continue
                n += len(data)
                if n > max_body:
                    raise BodyTooLarge
                yield data
                continue
            if self.body_done:
                return
            if self.body_error is not None:
                raise self.body_error
            await self._more()
            if not (self.chunks or self.body_done or self.body_error is not None):
                yield b""

    # ------------------------------------------------------------------ answer

    def will_keep_alive(self) -> bool:
        """Whether the connection stays open after this answer (say so in its head)."""
        return self.keep_alive and self.body_done and not self.conn.closing

    def respond(self, data: bytes) -> None:
        """A whole answer (head and body) in one write; the request is over."""
        self.responded = True
        conn = self.conn
        transport = conn.transport
        if transport is not None and not conn.closed:  # (`conn.write`, inline)
            transport.write(data)
        conn.finished(self)

    def start(self, head: bytes, chunked: bool) -> None:
        """The head of a streamed answer; the body follows with `send` and `end`."""
        self.responded = True
        self.out_chunked = chunked
        self.conn.write(head)

    def send(self, data: bytes) -> None:
        if data:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data) if self.out_chunked else data)

    async def drain(self) -> None:
        """Wait while the client is not taking what it is sent (flow control)."""
        await self.conn.drain()

    def end(self, last: bytes = b"") -> None:
        self.send(last)
        if self.out_chunked:
            self.conn.write(b"0\r\n\r\n")
        self.conn.finished(self)

    def abort(self) -> None:
        """End the connection without a clean end of the answer (an incomplete body)."""
        self.conn.abort()
