"""Our HTTP/1.1 server protocol for the data-plane listener: one client connection.

An `asyncio.Protocol` (uvloop's transports) parsed by llhttp through httptools in its strict
default mode. Owns, per connection: the reads and their parsing (the callbacks are
`dataplane/parsing.py`'s, the limits and refusals `dataplane/wire.py`'s: a malformed or
ambiguous request is a 400, then the connection closes); keep-alive and pipelining (answers
strictly in request order: the next request is handed over when the previous answer is
written, and reading pauses while requests queue: `dataplane/dispatch.py` hands them on);
`Expect: 100-continue` (sent when the proxy first reads the body); flow control both ways
(`dataplane/flow.py`: reading pauses while the proxy is not taking the body, and a client
that takes nothing of an answer meets `send_timeout`); a client's end of its side (nothing
pending: close; an answer pending: the client is gone, as for nginx and aiohttp); its end
(`dataplane/closing.py`: a lingering close while the client may still be sending); under
the listener's drain (`dataplane/draining.py`: what it can spare, its graceful end); and the
connection's deadlines with one timer, re-armed lazily (`dataplane/deadlines.py`): the
first head within `header_timeout` of the accept, each later head within `header_timeout`
of its first byte, `keepalive_timeout` between requests, `body_timeout` between body bytes
while we read (a small body: whole within it of its head; a larger, chunked or 100-continue
one at `body_min_rate` on average once `body_timeout` has passed), `send_timeout` while the
client takes nothing of an answer it holds up (and `body_min_rate` on average once it has
passed). Each fires at its deadline (the loop's timer precision), never later.

It knows nothing of routing: each request goes to the `Handler` (the proxy) from the parser
callback, with no Task of its own, and is answered through its `Request`. Imports httptools
(the only other user is the upstream exchange) and nothing of the gateway's above dataplane.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import httptools

from gateway.dataplane.chunkframing import ChunkFraming
from gateway.dataplane.closing import Closing
from gateway.dataplane.deadlines import Deadlines
from gateway.dataplane.dispatch import Dispatching
from gateway.dataplane.draining import DRAIN_FRESH_GRACE, Draining
from gateway.dataplane.flow import Flow
from gateway.dataplane.parsing import FREE_REFS, NoSpare, Parsing
from gateway.dataplane.request import ClientGone, Request
from gateway.dataplane.wire import (
    MAX_HEAD,
    MAX_HEADERS,
    MAX_LINE,
    SLICE,
    SMALL_BODY,
    Handler,
    Limits,
    Server,
    error_response,
)

__all__ = ["DRAIN_FRESH_GRACE", "MAX_HEAD", "MAX_HEADERS", "MAX_LINE", "SLICE", "SMALL_BODY",
           "Handler", "HttpProtocol", "Limits", "Server", "c_parser", "error_response"]


def c_parser() -> bool:
    """llhttp (C) is what parses: httptools has no pure-Python fallback, but check anyway."""
    mod = getattr(httptools.HttpRequestParser, "__module__", "")
    lib = getattr(httptools.parser.parser, "__file__", "") or ""
    return mod.startswith("httptools.parser") and lib.endswith((".so", ".pyd"))


class HttpProtocol(Parsing, ChunkFraming, Deadlines, Dispatching, Flow, Closing, Draining,
                   asyncio.Protocol):
    """One HTTP/1.1 client connection of the data plane."""

    # Slots, not instance dict entries: over ~30 attributes CPython 3.11 stops sharing the
    # dict's keys and every `self.x` of the callbacks takes the slower dict-with-hint access
    # (the mixins declare none: mypy would refuse their writes to these; the instance dict
    # their lack of slots leaves stays empty)
    __slots__ = ("clock", "closed", "closing", "deadline", "dispatching", "drainer",
                 "first_read", "framing", "fresh", "fwd_host", "fwd_lines", "handler",
                 "head_bytes", "held", "held_s", "held_taken",
                 "in_head", "in_trailer", "last_host", "last_route_host", "last_split",
                 "last_target", "limits", "line",
                 "linger_end", "linger_heard", "lingering", "loop", "nchunks", "parser", "parsing",
                 "paused_at", "queue", "rate_from", "rate_req", "read_paused", "read_paused_at",
                 "reading",
                 "remote", "remote_b", "replaying", "seen", "send_base", "send_look", "sending",
                 "server", "spares", "stopped", "timer", "timer_at", "transport",
                 "wire_bytes", "write_paused")

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.handler = handler = server.handler
        # the proxy when it keeps a spare flight (`Proxy._route`): the connection begins its
        # next request in the flight's last one when nothing refers to either (parsing.py)
        self.spares: Any = (handler if getattr(handler, "_free_refs", None) == FREE_REFS
                            else NoSpare())
        self.limits = server.limits
        self.clock = server.clock
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.remote_b = b"unknown"
        # the x-forwarded-* lines of this peer and the Host last sent on this connection
        # (`Outgoing._forwarded_of`); LF is never in a Host value (llhttp refuses it)
        self.fwd_host: bytes | None = b"\n"
        self.fwd_lines = b""
        # the target and Host of the last request routed (`Proxy.handle`): none yet (LF is
        # never in a target or a Host value)
        self.last_target = b"\n"
        self.last_split: tuple[str, bytes] = ("", b"")
        self.last_host: bytes | None = b"\n"
        self.last_route_host = ""
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()  # heads parsed, not yet answered, in order
        self.parsing: Request | None = None   # the request whose bytes are arriving
        self.in_head = False
        self.in_trailer = False                # after a chunk header, until its data (if any)
        self.head_bytes = 0                    # of the head (or trailer section) so far
        self.wire_bytes = 0                    # reads spent wholly inside that section
        self.fresh = False                     # that section began in this read
        self.framing = self.nchunks = 0        # a chunked body's: `ChunkFraming._framed`
        self.seen = 0                          # requests parsed whole on this connection
        self.dispatching = False
        self.read_paused = False
        self.write_paused = False
        self.paused_at = 0.0                   # since when the client holds up an answer
        self.send_base = 0                     # of it, still to go out then (`_taking`)
        self.send_look = 0.0                   # the next look at its progress
        self.held_s = 0.0                      # the client's earlier holdups, in seconds
        self.held_taken = 0                    # and what it took of our answers in them
        self.read_paused_at = 0.0              # since when we have not been reading
        self.rate_req: Request | None = None   # the body `body_min_rate` judges (`Deadlines`)
        self.rate_from = 0.0                   # its clock: its first wait, less our pauses
        self.sending = 0                       # of an answer, still to go out (`_sending`)
        self.drainer: asyncio.Future[None] | None = None
        self.held = b""                        # bytes read, not parsed yet (requests queued)
        self.replaying = False
        self.closing = False                   # close once the answer in progress is written
        self.closed = False
        self.stopped = False                   # parse nothing more (a refused request)
        self.lingering = False                 # half-closed, dropping what comes (`_linger`)
        self.linger_end = 0.0
        self.linger_heard = False              # bytes came since the last linger check
        self.deadline = 0.0                    # for the next (or current) request head
        # a read that began between requests (at most SLICE bytes), until the head of the
        # request it began is complete (in that read or a later one): the version of its
        # request line is read there (`Parsing.on_headers_complete`: no parser call)
        self.first_read: bytes | None = None
        # the read being parsed, and the reads a request line split across reads came in
        # (`Parsing.on_headers_complete` looks there for its protocol when `first_read`
        # cannot tell it: llhttp takes RTSP/1.0 and ICE/1.0 as HTTP/1.0)
        self.reading: bytes | memoryview | None = None
        self.line: bytearray | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        peer = transport.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) and peer else None
        cap = server.per_client
        # (its address's cap first: one refused anyway must not close an idle connection
        # of another client to make room at the global cap)
        if cap is not None and not cap.admit(remote or ""):
            server.counted("refused_per_client")
            self.closed = True
            transport.abort()  # type: ignore[attr-defined]  # its address is at its cap
            return
        if len(server.connections) >= server.max_connections and server.full():
            if cap is not None:
                cap.release(remote or "")
            server.counted("refused")
            self.closed = True
            transport.abort()  # type: ignore[attr-defined]  # over the cap: refused at once
            return
        server.connections.add(self)
        self.transport = transport  # type: ignore[assignment]
        self.remote = remote
        if remote:
            self.remote_b = remote.encode()
        self.deadline = self.loop.time() + self.limits.header_timeout
        self._arm(self.deadline)
        if server.draining:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            self.linger_heard = True  # (dropped: a refused request's rest, or lingering)
            return
        self.clock.now = self.loop.time()
        if self.held:  # (reading is paused while bytes are held: kept in order anyway)
            data, self.held = self.held + data, b""
        if len(data) <= SLICE:  # (`_feed`, inline: most reads)
            self.fresh = False
            if self.parsing is None:  # a request line starts this read (after any empty
                if self.closing:  # lines): its version is read from it once its head is in
                    return  # bytes after the last answer this connection gives: not parsed
                self.first_read = data  # (else the read its head began in: still true)
            req = self.parsing
            body = req.body_size if req is not None and req.chunked else -1
            self.reading = data
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self.stopped = True
                return
            except httptools.HttpParserError as exc:
                self._parse_error(exc)
                return
            finally:
                self.reading = None
            if self.in_head or self.in_trailer:
                if not self.fresh:
                    self._open_field(len(data))
                if self.in_head:
                    self._line_read(data)
            if body >= 0 and req is self.parsing and not self.stopped:
                self._framed(req, len(data) - (req.body_size - body))  # type: ignore[arg-type,union-attr]
            return
        # One read can hold thousands of tiny pipelined requests: parsed all at once, each
        # would wait as a Request for its turn. Parse a slice at a time, and hold the rest
        # as bytes while requests queue (a body goes in one piece: it makes no requests).
        view = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            if len(self.queue) > 1:
                self.held = bytes(view[i:])
                self._pause()
                return
            step = SLICE
            req = self.parsing
            if req is not None and not self.in_head and req.content_length:
                step = max(step, req.content_length - req.body_size)
            self._feed(view[i:i + step])
            if self.stopped:
                return
            i += step

    def _replay(self) -> None:
        """Parse the bytes held while requests queued (the queue has caught up)."""
        self.replaying = False
        data, self.held = self.held, b""
        if data and not self.closed:
            self.data_received(data)
            if not self.held and len(self.queue) <= 1:
                self._resume()

    def _feed(self, data: bytes | memoryview) -> None:
        self.fresh = False
        self.first_read = None
        req = self.parsing
        body = req.body_size if req is not None and req.chunked else -1
        self.reading = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.stopped = True  # the upgrade request is queued as refused; nothing follows
            return
        except httptools.HttpParserError as exc:
            self._parse_error(exc)
            return
        finally:
            self.reading = None
        if self.in_head or self.in_trailer:
            if not self.fresh:
                self._open_field(len(data))
            if self.in_head:
                self._line_read(data)
        if body >= 0 and req is self.parsing and not self.stopped:
            self._framed(req, len(data) - (req.body_size - body))  # type: ignore[arg-type,union-attr]

    def eof_received(self) -> bool:
        """The client closed its side. Answers still pending are dropped and their backend
        exchanges freed (nginx's default, `proxy_ignore_client_abort off`, and aiohttp's):
        a client that shuts down its side and one that went away look the same until a
        write fails, and a backend held for a client that left is the costlier mistake."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return  # refused at accept
        self.closed = True
        self.server.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        d = self.drainer
        if d is not None and not d.done():
            d.set_result(None)
        queue, self.queue = self.queue, deque()
        for req in queue:
            req.body_error = ClientGone("the client went away")
            req.wake()
            if req.dispatched:
                self.handler.gone(req)
                self.handler.done(req)
