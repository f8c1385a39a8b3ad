"""The llhttp callbacks of a data-plane connection: the head as it arrives (limits counted,
Host/framing/Expect/Upgrade noted, `_` aliases refused: headrules.py's rules), its checks
once whole (a request line's protocol: requestline.py), trailers dropped (a chunked
body's framing bounded: chunkframing.py), the body collected with flow control, when each
request is handed on, and what a parse error or an overlong open field becomes. A base of
`protocol.HttpProtocol`, which owns the connection (its reads), its queue and deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from sys import getrefcount
from typing import Any

from gateway.dataplane.clock import Clock
from gateway.dataplane.headrules import head_field, refusal
from gateway.dataplane.lengths import LENGTHS, length_value
from gateway.dataplane.request import Request
from gateway.dataplane.requestline import RequestLine
from gateway.dataplane.wire import (
    BODY_HIGH,
    DROPPED,
    HOST,
    LENGTH,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_LINE,
    NAMES,
    SMALL_BODY,
    Limits,
    Refuse,
    Server,
    Stop,
    name_kind,
)

__all__ = ["FREE_REFS", "NoSpare", "Parsing"]

log = logging.getLogger("killgate.protocol")

# A head (or trailer section) of at most this many counted bytes is within MAX_HEAD and
# holds fewer than MAX_HEADERS fields (each field counts at least 5: a name, and 4), none
# of them longer than MAX_LINE
_COUNTED = 5 * MAX_HEADERS
assert _COUNTED < MAX_HEAD and _COUNTED <= MAX_LINE


class _Held:
    __slots__ = ("req",)
    req: Request


def _free_refs() -> int:
    """References to an object held only by one attribute, as `on_message_begin` counts a
    spare flight and its request (the attribute, a name, the argument), and `Proxy._route`
    its spare flight: counted, not assumed (3.14 borrows some)."""
    held = _Held()
    held.req = req = Request()
    return getrefcount(req)


FREE_REFS = _FREE = _free_refs()
_NEVER = object()  # (held here and by `NoSpare`: never free)


class NoSpare:
    """What a connection reads the spare flight of when its handler keeps none (a test's):
    one never free."""

    __slots__ = ()
    _spare = _NEVER


class Parsing(RequestLine):
    """The parser callbacks of `HttpProtocol` (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    parser: Any  # httptools.HttpRequestParser (httptools is protocol.py's to import)
    clock: Clock
    limits: Limits
    server: Server
    queue: deque[Request]
    parsing: Request | None
    in_head: bool
    in_trailer: bool
    head_bytes: int
    wire_bytes: int
    fresh: bool
    framing: int
    nchunks: int
    seen: int
    stopped: bool
    closing: bool
    read_paused: bool
    deadline: float
    first_read: bytes | None
    timer: asyncio.TimerHandle | None
    timer_at: float
    _arm: Callable[[float], None]
    _pause: Callable[[], None]
    _dispatch: Callable[[], None]
    _malformed: Callable[..., None]
    _chunk_line: Callable[[], None]  # (chunkframing.py's)
    spares: Any  # the proxy (its `_spare` flight), or `NoSpare()`

    def _parse_error(self, exc: Exception) -> None:
        """llhttp refused the bytes (`exc`, an httptools error), or a callback did."""
        cause = exc.__context__
        if isinstance(cause, Stop):
            return
        if isinstance(cause, Refuse):  # (raised by a callback: the method was read)
            self._malformed(cause.status, cause.message, self.parser.get_method())
        elif cause is not None:  # a callback of ours failed: a bug, not the client's bytes
            log.error("request_parse_failed", exc_info=cause)  # (as `_dispatch` does)
            self.server.counted("internal_error")
            self._malformed(500, "the gateway failed on this request")
        else:
            self._malformed(400, f"malformed request: {exc}")

    def _open_field(self, n: int) -> None:
        """A read wholly inside a head or trailer section whose field is still open:
        httptools holds such a field until its end, so its bytes are counted here (a
        section's complete fields are counted exactly as they arrive)."""
        self.wire_bytes += n
        if self.wire_bytes > MAX_HEAD:  # (64 KiB into a head: its method was read)
            self._malformed(400, "the request head is too large" if self.in_head
                            else "a chunk header or the trailer section is too large",
                            self.parser.get_method() if self.in_head else b"")

    def on_message_begin(self) -> None:
        """A request begins: its first byte after any empty lines (llhttp skips those), in
        whatever read it comes. (Not guessed from the reads instead: the method alone, in
        the read that ends the request before, calls nothing else, and its head's deadline
        runs from then.)"""
        if self.stopped or self.closing:
            raise Stop
        now = self.clock.now
        # The last routed request, begun again when nothing refers to it but the proxy's
        # spare flight, itself free (`Proxy._route`): a Request made and freed costs ~990
        # CPU instructions a request (30 slots), and `begin` writes every one of them.
        # (Both counts: a holder of the flight, a task, a kill, reads its `req`. The proxy's
        # `_ADMITTED` marker, when it is the spare, is held by its module too: never free,
        # so its missing `req` is never read.)
        spare = self.spares._spare
        if getrefcount(spare) == _FREE and getrefcount(req := spare.req) == _FREE:
            self.parsing = req.begin(self, now)
        else:
            self.parsing = Request().begin(self, now)
        self.in_head = True
        self.head_bytes = self.wire_bytes = 0
        self.fresh = True
        if self.seen:  # every head has its own deadline (armed now, or once answers catch up)
            self.deadline = when = now + self.limits.header_timeout
            if not self.queue and (self.timer is None or when < self.timer_at):
                self._arm(when)
        elif self.server.winding_down:  # the first, begun in the drain's grace: a whole
            self.deadline = now + self.limits.header_timeout  # head deadline of its own
        if self.server.winding_down:  # shutting down: the connection's last request (its
            self.closing = True  # answer says `Connection: close`), wherever it comes

    def on_url(self, url: bytes) -> None:
        req: Request = self.parsing  # type: ignore[assignment]  # (begun)
        req.target = target = req.target + url
        if len(target) > MAX_LINE:
            raise Refuse(400, "the request target is too long")
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # (a call per field of every request: few operations on the common path, which is
        # most of the head's cost; the rare cases are checked behind one comparison)
        self.head_bytes = size = self.head_bytes + len(name) + len(value) + 4
        if size > _COUNTED:  # (below it, no limit can be reached: not MAX_LINE either)
            if len(name) + len(value) > MAX_LINE:
                raise Refuse(400, "a header field is too long")
            if size > MAX_HEAD:
                raise Refuse(400, "the request head is too large" if self.in_head
                             else "the trailer section is too large")
            if self.in_head and len(self.parsing.raw_headers) >= MAX_HEADERS:  # type: ignore[union-attr]
                raise Refuse(400, f"more than {MAX_HEADERS} header fields")
        if not self.in_head:
            # A chunked body's trailer section: never merged into the head (RFC 9110
            # §6.5.1), which was routed and is forwarded without it; dropped. But llhttp
            # reads a `Connection: close` (or `Proxy-Connection`) there as the request's,
            # and refuses what follows ("Data after `Connection: close`"): its answer says
            # close, and it is the last
            if name.lower() in (b"connection", b"proxy-connection"):
                self.parsing.keep_alive = False  # type: ignore[union-attr]  # (in a body)
            return
        req: Request = self.parsing  # type: ignore[assignment]  # (in a head)
        if value and value[-1] <= 32:  # (one comparison: `in (32, 9)` is a call, and
            value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace: SP, HTAB)
        req.raw_headers.append((name, value))
        try:  # (a subscript costs less than a call: `name_kind` for a new spelling)
            kind = NAMES[name]
        except KeyError:
            kind = name_kind(name)
        if not kind:  # forwarded as is: its parts of the backend's head, sorted here so
            req.kept += (name, b": ", value, b"\r\n")  # that no second pass sorts them
        elif kind == HOST and req.host is None:
            req.host = value
        elif kind == LENGTH:  # (llhttp checked: digits, no duplicates)
            try:  # (a subscript costs less than int(): short ones are remembered)
                req.content_length = LENGTHS[value]
            except KeyError:
                req.content_length = length_value(value)
        elif kind != DROPPED:
            head_field(req, kind, name, value)

    def on_headers_complete(self) -> None:
        req = self.parsing
        assert req is not None
        self.in_head = False
        p = self.parser
        req.method = method = p.get_method()
        # The version, read from the request line when it began a read (the parser's own
        # answer formats a string: ~2,600 CPU instructions). The 11 bytes after the method,
        # a space and the target are " HTTP/1.1" or " HTTP/1.0" and CRLF only when the line
        # began at the read's first byte: llhttp skips empty lines before a request line,
        # and 11 bytes shifted by those begin with a skipped CR or LF, or lie inside the
        # method and target (no CR, LF or second space), or end inside " HTTP/" (no space
        # after its first byte). Any other case asks the parser.
        first = self.first_read
        if first is None:
            version = self._version(req, method)
        else:
            self.first_read = None
            at = len(method) + len(req.target) + 1
            end = first[at:at + 11]
            if end == b" HTTP/1.1\r\n":  # (no line kept for it: `_line_read` read it here)
                version = "1.1"
            elif end == b" HTTP/1.0\r\n":
                version = "1.0"
            else:
                version = self._version(req, method)
        if (version != "1.1" or req.reread) and req.keep_alive:
            req.keep_alive = p.should_keep_alive()  # (off: a `close` token came, which
            # wins over llhttp's HTTP/1.0 `keep-alive, close`: `head_field`)
        # (else llhttp's answer is known, and not asked for: ~300 CPU instructions. Only a
        # `Connection` or `Proxy-Connection` field, of kind CONNECTION, turns an HTTP/1.1
        # request's keep-alive off (one of `keep-alive` or `close` alone leaves `reread`
        # off: `head_field` turns it off for `close`), and a request never needs its
        # connection's end to end; `keep_alive` is True since `Request.begin`)
        if version != "1.1":
            req.http10 = http10 = version == "1.0"
            if http10:  # (RFC 9110 10.1.1: an HTTP/1.0 client gets no interim answer)
                req.expect_continue = False
        refused = req.refused
        if refused is None and (version != "1.1" or method == b"CONNECT" or req.host is None):
            req.refused = refused = refusal(req, version)
        if refused is not None:
            req.keep_alive = False
            self.stopped = True  # answered in turn, then the connection closes
        elif req.chunked:
            self._chunk_line()
            self.framing = self.nchunks = 0
        req.last_body = now = self.clock.now
        queue = self.queue
        queue.append(req)
        length = req.content_length
        if len(queue) > 1:
            if not self.read_paused:
                self._pause()  # pipelined: read on once the answers caught up
        elif refused is not None or req.chunked or req.expect_continue or (
                length is not None and length > SMALL_BODY):
            self._dispatch()  # handed over at its head (else once its small body is in)
        elif length:  # the small body's deadline: whole by then (`deadlines.py`)
            self.deadline = when = now + self.limits.body_timeout
            if self.timer is None or when < self.timer_at:
                self._arm(when)

    def on_body(self, data: bytes) -> None:
        self.in_trailer = False
        req = self.parsing
        assert req is not None
        if req.refused is not None:
            return
        req.chunks.append(data)
        n = len(data)
        req.buffered = buffered = req.buffered + n
        req.body_size += n
        req.last_body = self.clock.now
        if req.waiter is not None:
            req.wake()
        if buffered > BODY_HIGH and not self.read_paused:
            self._pause()

    def on_message_complete(self) -> None:
        req = self.parsing
        assert req is not None
        self.parsing = None
        self.in_trailer = False
        self.seen += 1
        req.body_done = True
        if req.waiter is not None:
            req.wake()
        self._dispatch()
