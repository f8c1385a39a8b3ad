"""The llhttp callbacks of a backend connection (`exchange.Exchange`, a base of it): the
answer's head as it arrives, each field classified (`answerfields.answer_field`: framing, and the
forwarded ones kept as head parts), its status and version checked, 1xx answers dropped, the
body collected (reading paused past HIGH_WATER), the end noted; the exchange is woken at
each step. Its state is the exchange's (declared here; the answer's fields the callbacks
write are slots of this base); no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.dataplane.answerfields import (
    ANSWER_FIELDS,
    CODING,
    DATED,
    FORWARD,
    GENERAL,
    LENGTH,
    LOCATED,
    TYPED,
    answer_field,
)
from gateway.dataplane.answerheads import remember
from gateway.dataplane.awaiting import Awaiting
from gateway.dataplane.clock import Clock
from gateway.dataplane.fieldrules import closes
from gateway.dataplane.lengths import LENGTHS, length_value
from gateway.dataplane.location import local_location
from gateway.errors import UpstreamError, UpstreamProtocolError

__all__ = ["HIGH_WATER", "MAX_ANSWER_HEAD", "AnswerParsing", "BadAnswer"]

HIGH_WATER = 256 * 1024
#: an answer head (its interim 1xx heads included) larger than this is a 502 (Envoy's
#: default is 60 KiB; llhttp has no limit of its own, and an endless head was read whole)
MAX_ANSWER_HEAD = 64 * 1024
#: fields that llhttp reads in a trailer section as the message's own (a `close` there
#: ends the connection for it)
_CLOSING = (b"connection", b"proxy-connection")


class BadAnswer(Exception):
    """An answer the parser took that HTTP/1.1 does not have (its message is the reason)."""


class AnswerParsing(Awaiting):
    """The parser callbacks of `Exchange` (see the module docstring), over `Awaiting`'s
    coroutines; the exchange's state is declared here, and what these callbacks write
    (of the answer) is their slots."""

    __slots__ = ("_framed", "begins", "body_total", "complete", "dated", "framing", "general",
                 "head_at", "head_key", "head_misses", "head_pause", "headers",
                 "headers_done", "heads_read", "heads_seen", "keep_alive", "length", "lines",
                 "nchunks", "on_message_begin", "stale", "status", "trail_fresh",
                 "trailer_bytes", "trailing", "woke")

    # the exchange's state they read and write (Exchange's, Awaiting's)
    parser: Any  # httptools.HttpResponseParser (httptools is exchange.py's to import)
    clock: Clock
    base: bytes  # the version's base path (its URL's path; "" for none)
    feeding: bool
    woke: bool
    head: bool
    heads_read: bytearray | None
    heads_seen: int
    status: int
    headers: list[tuple[bytes, bytes]]
    lines: list[bytes]
    dated: bool
    general: bool
    length: int | None
    head_at: float
    head_key: bytes | None  # the head in progress, to remember once parsed (answerheads.py)
    complete: bool
    keep_alive: bool
    _framed: bool
    _wake: Callable[[], None]
    fail: Callable[[UpstreamError], None]
    framing: int  # a chunked answer's bytes that were not body (`_framed_by`) ...
    body_total: int  # ... its body's bytes ...
    nchunks: int  # ... and its chunks (set by Exchange._reset)

    # A message begins: welcome once an exchange (its answer) and once after each 1xx (its
    # final answer follows); any other is a second answer, or bytes on an idle connection,
    # and fails the parse (`Exchange.data_received`: the answer stands, if complete, and the
    # connection is never used again). llhttp's callback is `begins.pop`, a C method, not
    # a Python one: a call from C into Python code costs ~540 CPU instructions, this ~100.
    # `begins` holds one item while a message is welcome (`Exchange._reset` puts it, and
    # `on_message_complete` after a 1xx); a pop from it empty raises IndexError.
    begins: list[None]
    on_message_begin: Callable[[], object]

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            # a chunked answer's trailer: never merged into its head (RFC 9110 6.5.1); its
            # complete fields are counted here, an open one by `Exchange.data_received`
            self.trailer_bytes += len(name) + len(value) + 4
            if self.trailer_bytes > MAX_ANSWER_HEAD:
                raise BadAnswer(f"the backend's trailer section is over "
                                f"{MAX_ANSWER_HEAD // 1024} KiB")
            if name.lower() in _CLOSING:
                # llhttp reads a trailer's `Connection: close` (or `Proxy-Connection`) as the
                # message's and refuses any later answer on the connection ("Data after
                # `Connection: close`"): never reused, or the next request there got a 502
                # for a valid answer
                self.keep_alive = False
            return
        self.headers.append((name, value))
        try:
            kind = ANSWER_FIELDS[name]  # (a subscript costs less than a `get` call)
        except KeyError:
            kind = answer_field(name)
        if kind == FORWARD:
            self.lines += (name, b": ", value, b"\r\n")
        elif kind == DATED:
            self.lines += (name, b": ", value, b"\r\n")
            self.dated = True
        elif kind == TYPED:
            self.lines += (name, b": ", value, b"\r\n")
            # (an event stream's head drops more fields: `response_head`'s; "text/event-
            # stream" is 17 bytes, so most types, "application/json" first, stop at len)
            if len(value) >= 17 and value[:17].lower() == b"text/event-stream":
                self.general = True
        elif kind == LENGTH:
            self._framed = True
            try:  # (a short one seen before: digits only; a subscript costs less than int())
                self.length = LENGTHS[value]
            except KeyError:
                value = value.rstrip(b" \t")  # (llhttp frames by the digits, keeps the rest)
                if value.isdigit():
                    self.length = length_value(value)
        elif kind == CODING:
            self.head_key = None  # (a trailer's fields would reach no `on_header`)
            # (llhttp takes any codings before "chunked": "gzip, chunked" de-chunked would
            # reach the client as if its bytes were not coded at all)
            if value.strip(b" \t").lower() != b"chunked":
                raise BadAnswer("the backend used a transfer coding other than chunked "
                                f"({value[:64].decode('latin-1')!r}), which is not proxied")
            self._framed = True
        elif kind == GENERAL:
            self.general = True
        elif kind == LOCATED:
            # A URL the backend built from the Host we sent it (its own address: a
            # trailing-slash redirect, say) is made relative, as nginx's `proxy_redirect
            # default` does: the client follows it to the gateway, and never learns the
            # backend's address. Any other URL is forwarded as it came.
            self.head_key = None  # (what it becomes depends on the backend, not the bytes)
            local = local_location(value, self.pool.origins, self.base)
            if local is not None:
                value = local
                self.headers[-1] = (name, value)
            self.lines += (name, b": ", value, b"\r\n")

    def _heads_checked(self, status: int) -> None:
        """The answer head just parsed, when its first read did not show one final
        "HTTP/1.x" head (`Exchange.data_received`): its version is 1.1 or 1.0, and it names
        HTTP (llhttp parses "RTSP/1.0 200" and "ICE/1.1 200" as HTTP of the same numbers and
        does not say so), or the answer is refused (BadAnswer). The heads are in `heads_read`,
        each after the one before (none has CRLF CRLF inside; `heads_seen`: where the next
        begins, so that a flood of 1xx heads is read once); dropped at the final one."""
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise BadAnswer(f"the backend answered in HTTP/{version}")
        kept: bytearray = self.heads_read  # type: ignore[assignment]  # (kept: see above)
        at = self.heads_seen
        while kept[at:at + 1] in (b"\r", b"\n"):  # (empty lines llhttp skips)
            at += 1
        if kept[at:at + 5] != b"HTTP/":
            raise BadAnswer("the backend answered in another protocol than HTTP (RTSP or ICE)")
        end = kept.find(b"\r\n\r\n", at)
        self.heads_seen = len(kept) if end < 0 else end + 4
        if status >= 200:  # (the final head: the next answer's first read decides anew)
            self.heads_read = None

    def on_headers_complete(self) -> None:
        """`full`'s (it calls `on_header`): `head_parsed`, then a Connection `close` token
        ends the connection after this answer (llhttp keeps HTTP/1.0's `keep-alive, close`
        alive; RFC 9112 9.6: `close` wins). Not in `head_parsed`: heads seen before
        (answerheads.py) have no Connection field, and pay for no look. (Within a feed the
        wake only marks `woke` or sets a future: `keep_alive` is read after.)"""
        self.head_parsed()
        if self.general and self.keep_alive and any(
                name.lower() in _CLOSING and closes(value) for name, value in self.headers):
            self.keep_alive = False

    def head_parsed(self) -> None:
        """The head parsed (either parser's `on_headers_complete`)."""
        status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            raise BadAnswer(f"the backend answered status {status:03d}, which HTTP does not have")
        if self.heads_read is not None:  # (else one final HTTP/1.x head: the parser's own
            self._heads_checked(status)  # version formats a string, 0.4 µs per answer)
        if status < 200:
            return  # informational: the real head follows
        self.status = status
        self.headers_done = True
        self.head_at = self.clock.now
        self.keep_alive = self.parser.should_keep_alive()
        key = self.head_key
        if key is not None:  # (a final head whole in its answer's first read, not to HEAD)
            self.head_key = None
            if self.length is not None and not self.general:
                remember(key, self.lines, self.headers, self.dated, self.length)
        if self._framed and self.length is None and not self.head:  # chunked
            self._chunk_line()  # (a 204's or 304's: its message ends now, and with it this)
        if status == 204 or status == 304 or self.head:  # (not `in` a tuple: a call)
            if self._framed and self.length != 0:
                # a 204 or 304 that announced a body (a length, or chunked) has none (llhttp
                # ends it here), and a backend that sends one anyway, late, would have it
                # read as the next request's answer: never used again, as for HEAD below
                self.keep_alive = False
            self._framed = True
        if self.head:
            # llhttp cannot be told an answer is to HEAD (it would wait for the body its
            # Content-Length announces): the answer ends here. A connection whose answer
            # announced a body (a length above 0, chunked, or until the close) is not used
            # again: a backend that sends a body for HEAD, the head first and the body when
            # ready, would have that body read as the next request's answer, another
            # client's (review 8). One announcing none (`Content-Length: 0`) is, and the next
            # answer is read by a parser of its own (`stale`: `Exchange._reset`); a byte of a
            # body after it closes the connection (`_headless`).
            self.complete = True
            self.stale = True
            if self.length != 0:
                self.keep_alive = False
        if self.feeding and self.waiter is None:
            self.woke = True  # (`_wake`, inline: the sink hears once these bytes are parsed)
        else:
            self._wake()

    def on_chunk_header(self) -> None:
        # a chunk's data follows, or (after the last, empty one) the trailer section
        self.trailing = self.trail_fresh = True
        self.trailer_bytes = 0
        self.nchunks += 1
        if self.head:
            self._headless()

    def _headless(self) -> None:
        """Bytes of a body after an answer to HEAD (which has none): the connection is
        never used again (they are the body's, or another answer's: no telling)."""
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    def on_chunk_complete(self) -> None:
        self._chunk_line()

    def _chunk_line(self) -> None:
        """A chunk header follows: its size and extensions (`5;name=value`), which llhttp
        skips and hands to no callback. Counted as a trailer section is (`_open_trailer`),
        so that a backend cannot send them without end."""
        self.trailing = self.trail_fresh = True
        self.trailer_bytes = 0

    def on_body(self, body: bytes) -> None:
        self.trailing = False
        if self.head:
            self._headless()
            return
        self.chunks.append(body)
        self.buffered += len(body)
        self.body_total += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused and self.transport:
            self.read_paused = True
            self.transport.pause_reading()
        if self.feeding and self.waiter is None:
            self.woke = True
        else:
            self._wake()

    def _framed_by(self, n: int) -> None:
        """`n` bytes of a read spent in a chunked answer's body were not body: sizes,
        extensions, CRLFs, trailers (the read that ends it is not counted). Each chunk
        header is bounded (`_chunk_line`), their number is not: one byte of body per 64 KiB
        header went on until the total timeout, and never waited for a slow client (such
        bytes are dropped, not buffered). Allowed: two sections' worth, as many bytes as
        the body, and 32 a chunk (a size of 16 hex digits and its CRLFs are 20)."""
        self.framing = framing = self.framing + n
        if framing > 2 * MAX_ANSWER_HEAD + self.body_total + 32 * self.nchunks:
            self.fail(UpstreamProtocolError(
                "the chunk extensions of the backend's answer are far larger than its body"))

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of a 1xx: none of its fields are the answer's,
            self.headers = []  # nor its body (llhttp reads one for a 1xx other than 100,
            self.lines = []  # 102, 103 with a Content-Length: it never joins the answer's)
            self.chunks = []
            self.buffered = 0  # (within MAX_ANSWER_HEAD: reading was not paused for it)
            self.dated = self.general = False
            self.length = None
            self._framed = False
            self.begins.append(None)  # (its final answer is welcome)
            return
        self.complete = True
        self.trailing = False
        if self.feeding and self.waiter is None:
            self.woke = True
        else:
            self._wake()
