"""The head of each answer the client gets, as bytes: a backend's, re-framed, or our own.

Owns the answer's side of header hygiene (RFC 9110 §7.6, with the rules of fieldrules.py):
hop-by-hop fields and those named in `Connection` go, framing is rebuilt, `via`, `date` and
the x-killgate-* lines are ours, an event stream is marked not to be buffered; and reading a
Content-Type (event stream, charset). Pure functions over raw (bytes, bytes) pairs; no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

from gateway.dataplane.fieldrules import (
    CONN,
    CTYPE,
    DATE,
    RESPONSE_DROP,
    RESPONSE_NAMES,
    VIA,
    VIA_FIELD,
    VIA_LINE,
    connection_tokens,
    kept,
    learn,
)
from gateway.dataplane.lengths import HEAD_ENDS, LENGTH_LINES, head_end, length_line

__all__ = [
    "answer_head",
    "content_type",
    "declared_charset",
    "is_event_stream",
    "own_head",
    "response_head",
]


def content_type(raw: list[tuple[bytes, bytes]]) -> bytes:
    """The Content-Type of fields as they came (the first one; empty when none)."""
    for name, value in raw:
        if len(name) == 12 and name.lower() == b"content-type":
            return value
    return b""


def is_event_stream(content_type: bytes) -> bool:
    """Whether a Content-Type value is Server-Sent Events (`text/event-stream`, any case)."""
    return content_type[:17].lower() == b"text/event-stream"


def _raw_lines(first: bytes, raw: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes],
               cache: dict[bytes, int]) -> tuple[list[bytes], bool, bool]:
    """`first`, each end-to-end field as its `name`, `: `, `value`, CRLF parts and our Via
    line (one pass, bytes only: four appends cost less than formatting one line), whether
    a Date field was among them, and whether it is an event stream."""
    parts = [first]
    append = parts.append
    conn: list[bytes] | None = None
    via: list[bytes] | None = None
    dated = events = False
    for name, value in raw:
        act = cache.get(name)
        if act is None:
            act = learn(name, drop, cache)
        if not act:  # KEEP
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        elif act == DATE:
            dated = True
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        elif act == CTYPE:
            events = value[:17].lower() == b"text/event-stream"
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        elif act == CONN:
            (conn := conn or []).append(value)
        elif act == VIA_FIELD:
            (via := via or []).append(value)
    if conn:  # (rare: a second pass; a field it names goes, Via, Date or Content-Type too)
        named = connection_tokens(conn)
        parts = kept(first, raw, drop, cache, named)
        if b"via" in named:
            via = None
        dated = dated and b"date" not in named
        events = events and b"content-type" not in named
    parts.append(VIA_LINE if via is None else b"via: %s\r\n" % b", ".join([*via, VIA]))
    return parts, dated, events


_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _REASONS.items()}


class _Date:
    """The Date value and line of the current second (formatted once a second), and when
    that second ends on the event loop's clock (`due`: `answer_head` reads no clock)."""

    __slots__ = ("due", "line", "next", "value")

    def __init__(self) -> None:
        self.next = 0.0  # when the second after the one formatted begins (wall clock)
        self.due = float("-inf")  # the same instant on the loop's clock
        self.value = self.line = b""

    def stale(self, wall: float) -> bool:
        """Whether `wall` (time.time()) is past the second formatted, or before it: a wall
        clock stepped back is not answered with a Date from the future until it catches up."""
        return wall >= self.next or wall < self.next - 1.0

    def refresh(self, wall: float) -> None:
        second = int(wall)
        self.next = second + 1.0
        self.value = formatdate(second, usegmt=True).encode()
        self.line = b"date: %s\r\n" % self.value

    def tick(self, now: float) -> None:
        """The loop's clock reads `now`, past `due`: the wall clock read once, the line of
        its second, and when that second ends on the loop's clock (at most 1 s ahead)."""
        wall = time.time()
        if self.stale(wall):
            self.refresh(wall)
        self.due = now + (self.next - wall)


_DATE_NOW = _Date()


def _date() -> bytes:
    now = time.time()
    if _DATE_NOW.stale(now):
        _DATE_NOW.refresh(now)
    return _DATE_NOW.value


def _date_line() -> bytes:
    """`date: <now>\r\n`."""
    now = time.time()
    if _DATE_NOW.stale(now):
        _DATE_NOW.refresh(now)
    return _DATE_NOW.line


_RESPONSE_DROP_SSE = RESPONSE_DROP | {b"cache-control", b"x-accel-buffering"}
_SSE_NAMES: dict[bytes, int] = {}
_SSE_LINES = b"cache-control: no-cache\r\nx-accel-buffering: no\r\n"


def _marks(raw: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The lines that mark an answer not to be cached or buffered. The backend's Cache-Control
    gives way to `no-cache`, but not what it says against storing the answer at all
    (`no-store`) or in a shared cache (`private`: one user's answer): `no-cache` alone
    lets a cache store it, so those stay."""
    for name, value in raw:
        if len(name) == 13 and name.lower() == b"cache-control":
            v = value.lower()
            keep = [d for d in (b"no-store", b"private") if d in v]
            if keep:
                return b"cache-control: no-cache, %s\r\n%s" % (
                    b", ".join(keep), _SSE_LINES.split(b"\r\n", 1)[1])
    return _SSE_LINES


def response_head(status: int, raw: Iterable[tuple[bytes, bytes]], ours: bytes,
                  length: int | None, connection: bytes | None, chunked: bool = False,
                  sse: bool = False, body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response head from the backend's raw fields (the hot path: no
    decoding, one pass). Hop-by-hop fields go, `ours` (the x-killgate-* lines) and Via come
    in; framing is ours: `length` (Content-Length), `chunked`, or neither (no body, or a
    body that ends with the connection). `connection` is an explicit Connection value; an
    SSE answer (`sse`, or its Content-Type says so: whole or streamed, it reads the same)
    and a streamed one (`chunked`: NDJSON tokens, say) are marked not to be cached or
    buffered on the way (CONTRACT §3; nginx buffers a proxied answer unless told not to).
    `body`, when given, follows the head in the same bytes (a whole answer is built in one
    join)."""
    status_line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    if sse or chunked:
        parts, dated, _ = _raw_lines(status_line, raw, _RESPONSE_DROP_SSE, _SSE_NAMES)
        sse = True
    else:
        parts, dated, sse = _raw_lines(status_line, raw, RESPONSE_DROP, RESPONSE_NAMES)
        if sse:
            parts, dated, _ = _raw_lines(status_line, raw, _RESPONSE_DROP_SSE, _SSE_NAMES)
    append = parts.append
    if not dated:
        append(_date_line())
    append(ours)
    if sse:
        append(_marks(raw))
    if length is not None:
        append(b"content-length: %d\r\n" % length)
    elif chunked:
        append(b"transfer-encoding: chunked\r\n")
    if connection is not None:
        append(_CONNECTION.get(connection) or b"connection: %s\r\n" % connection)
    append(b"\r\n")
    if body:
        append(body)
    return b"".join(parts)


_CONNECTION = {b"close": b"connection: close\r\n", b"keep-alive": b"connection: keep-alive\r\n"}



def answer_head(status: int, lines: list[bytes], dated: bool, ours: bytes, length: int | None,
                connection: bytes | None, now: float, body: bytes = b"") -> bytes:
    """`response_head` of an answer whose forwarded fields are `lines` already (as
    `name`, `: `, `value`, CRLF parts) and hold none that only `response_head` handles
    (no Connection, no Via, not an event stream); `dated`: a Date was among them. The
    same bytes as `response_head`, without its pass over the fields. `now`: the event
    loop's clock (`Clock.now`: the answer's arrival), which tells when the Date line of the
    second changes (the wall clock is read once a second, not once an answer)."""
    try:  # (a subscript costs less than a `get` call)
        parts = [_STATUS_LINES[status]]
    except KeyError:
        parts = [b"HTTP/1.1 %d Unknown\r\n" % status]
    parts += lines
    append = parts.append
    append(VIA_LINE)
    if not dated:  # (`_date_line`, inline, and by the loop's clock)
        date = _DATE_NOW
        if now >= date.due:
            date.tick(now)
        append(date.line)
    append(ours)
    if connection is None:  # (HTTP/1.1 kept alive: most answers)
        if length is None:
            append(b"\r\n")
        else:  # (the framing line and the head's end, in one part)
            try:
                append(HEAD_ENDS[length])
            except KeyError:
                append(head_end(length))
    else:
        if length is not None:
            try:
                append(LENGTH_LINES[length])
            except KeyError:
                append(length_line(length))
        append(_CONNECTION.get(connection) or b"connection: %s\r\n" % connection)
        append(b"\r\n")
    if body:
        append(body)
    return b"".join(parts)


def own_head(status: int, content_type: bytes, length: int, ours: bytes, extra: bytes,
             connection: bytes | None) -> bytes:
    """The head of an answer of the gateway's own (errors, fallbacks)."""
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\ndate: %s\r\n%s%s%s\r\n" % (
        status, _REASONS.get(status, b"Unknown"), content_type, length, _date(), ours, extra,
        b"connection: %s\r\n" % connection if connection is not None else b"")


def declared_charset(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type, lower-cased and unquoted, or None."""
    if not content_type or "charset" not in content_type.lower():
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
