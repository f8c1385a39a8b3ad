"""Header hygiene for a proxy that re-frames, never forwards bytes (RFC 9110 §7.6).

Owns the rules for which fields cross the gateway in each direction: hop-by-hop fields
and those named in `Connection` are dropped both ways, framing fields are rebuilt,
`x-forwarded-*` and `via` are ours, and `x-killgate-*` never comes from outside.
Pure functions over raw (bytes, bytes) pairs; no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

__all__ = [
    "ANSWER_FIELDS",
    "LOCATED",
    "RawHeaders",
    "answer_field",
    "answer_head",
    "connection_tokens",
    "declared_charset",
    "is_event_stream",
    "own_head",
    "request_head",
    "response_head",
]

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})
# Rebuilt by the gateway or meaningless past it.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host", b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"forwarded", b"x-real-ip",
}
# With tracing on, the gateway sends its own traceparent (its CLIENT span is the parent).
_REQUEST_DROP_TRACED = _REQUEST_DROP | {b"traceparent"}
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
_INTERNAL = b"x-killgate-"
VIA = b"1.1 killgate"


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """Field names listed in Connection header values, lower-cased."""
    out: set[bytes] = set()
    for v in values:
        for tok in v.split(b","):
            tok = tok.strip().lower()
            if tok:
                out.add(tok)
    return frozenset(out)


# What a field does when it crosses, by its name as sent (learned once per spelling: the
# hot path does one dict lookup per field instead of lower-casing and comparing it).
_KEEP, _DROP, _CONN, _VIA, _DATE, _CTYPE = 0, 1, 2, 3, 4, 5
_LEARNED_MAX = 4096  # names a client can invent are bounded: the cache starts over past it


def _learn(name: bytes, drop: frozenset[bytes], cache: dict[bytes, int],
           answer: bool = True) -> int:
    low = name.lower()
    if low in drop or low.startswith(_INTERNAL):
        act = _CONN if low == b"connection" else _DROP
    elif low == b"via":
        act = _VIA
    elif answer and low == b"date":  # (Date and Content-Type matter in answers only)
        act = _DATE
    elif answer and low == b"content-type":
        act = _CTYPE
    else:
        act = _KEEP
    if len(cache) >= _LEARNED_MAX:
        cache.clear()
    cache[name] = act
    return act


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
            act = _learn(name, drop, cache)
        if not act:  # _KEEP
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        elif act == _DATE:
            dated = True
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        elif act == _CTYPE:
            events = value[:17].lower() == b"text/event-stream"
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
        elif act == _CONN:
            (conn := conn or []).append(value)
        elif act == _VIA:
            (via := via or []).append(value)
    if conn:
        parts = _kept(first, raw, drop, cache, connection_tokens(conn))
    parts.append(_VIA_LINE if via is None else b"via: %s\r\n" % b", ".join([*via, VIA]))
    return parts, dated, events


def _kept(first: bytes, raw: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes],
          cache: dict[bytes, int], named: frozenset[bytes],
          answer: bool = True) -> list[bytes]:
    """The parts again, without the fields that `Connection` names (rare: a second pass)."""
    parts = [first]
    for name, value in raw:
        act = cache.get(name)
        if act is None:
            act = _learn(name, drop, cache, answer)
        if act in (_KEEP, _DATE, _CTYPE) and name.lower() not in named:
            parts += (name, b": ", value, b"\r\n")
    return parts


_VIA_LINE = b"via: %s\r\n" % VIA
_REQUEST_NAMES: dict[bytes, int] = {}
_TRACED_NAMES: dict[bytes, int] = {}
_RESPONSE_NAMES: dict[bytes, int] = {}
_SSE_NAMES: dict[bytes, int] = {}


def request_head(first_line: bytes | list[bytes], raw: Iterable[tuple[bytes, bytes]],
                 forwarded: bytes, length: int | None, traced: bool = False,
                 body: bytes = b"") -> bytes:
    """The whole request head for a backend, built in one pass (the hot path).

    `first_line` already holds the request line and our Host, as bytes or as a list of
    its parts (the proxy's: then this extends that list in place, and no line is formatted
    per request); `forwarded` the x-forwarded-* lines (rebuilt from the socket peer: a
    client cannot spoof them), and, when `traced`, our traceparent (the client's is
    dropped). `body`, when given, follows the head in the same bytes.
    """
    if traced:
        drop, cache = _REQUEST_DROP_TRACED, _TRACED_NAMES
    else:
        drop, cache = _REQUEST_DROP, _REQUEST_NAMES
    parts = [first_line] if isinstance(first_line, bytes) else first_line
    line_parts = len(parts)
    conn: list[bytes] | None = None
    via: list[bytes] | None = None
    for name, value in raw:
        try:
            act = cache[name]  # (a subscript costs less than a `get` call)
        except KeyError:
            act = _learn(name, drop, cache, answer=False)
        if not act:  # _KEEP (one extend by a tuple costs less than four appends)
            parts += (name, b": ", value, b"\r\n")
        elif act == _CONN:
            (conn := conn or []).append(value)
        elif act == _VIA:
            (via := via or []).append(value)
    if conn:
        parts = _kept(b"".join(parts[:line_parts]), raw, drop, cache, connection_tokens(conn),
                      answer=False)
    parts += (_VIA_LINE if via is None else b"via: %s\r\n" % b", ".join([*via, VIA]),
              forwarded,
              b"content-length: %d\r\n\r\n" % length if length is not None
              else b"transfer-encoding: chunked\r\n\r\n",
              body)
    return b"".join(parts)


_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _REASONS.items()}
class _Date:
    """The Date value and line of the current second (formatted once a second)."""

    __slots__ = ("line", "next", "value")

    def __init__(self) -> None:
        self.next = 0.0  # when the second after the one formatted begins
        self.value = self.line = b""

    def refresh(self, now: float) -> None:
        second = int(now)
        self.next = second + 1.0
        self.value = formatdate(second, usegmt=True).encode()
        self.line = b"date: %s\r\n" % self.value


_DATE_NOW = _Date()


def _date() -> bytes:
    now = time.time()
    if now >= _DATE_NOW.next:
        _DATE_NOW.refresh(now)
    return _DATE_NOW.value


def _date_line() -> bytes:
    """`date: <now>\r\n`."""
    now = time.time()
    if now >= _DATE_NOW.next:
        _DATE_NOW.refresh(now)
    return _DATE_NOW.line


_RESPONSE_DROP_SSE = _RESPONSE_DROP | {b"cache-control", b"x-accel-buffering"}
_SSE_LINES = b"cache-control: no-cache\r\nx-accel-buffering: no\r\n"


def response_head(status: int, raw: Iterable[tuple[bytes, bytes]], ours: bytes,
                  length: int | None, connection: bytes | None, chunked: bool = False,
                  sse: bool = False, body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response head from the backend's raw fields (the hot path: no
    decoding, one pass). Hop-by-hop fields go, `ours` (the x-killgate-* lines) and Via come
    in; framing is ours: `length` (Content-Length), `chunked`, or neither (no body, or a
    body that ends with the connection). `connection` is an explicit Connection value; an
    SSE answer (`sse`, or its Content-Type says so: whole or streamed, it reads the same)
    is marked not to be cached or buffered on the way. `body`, when given, follows the head
    in the same bytes (a whole answer is built in one join)."""
    status_line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    if sse:
        parts, dated, _ = _raw_lines(status_line, raw, _RESPONSE_DROP_SSE, _SSE_NAMES)
    else:
        parts, dated, sse = _raw_lines(status_line, raw, _RESPONSE_DROP, _RESPONSE_NAMES)
        if sse:
            parts, dated, _ = _raw_lines(status_line, raw, _RESPONSE_DROP_SSE, _SSE_NAMES)
    append = parts.append
    if not dated:
        append(_date_line())
    append(ours)
    if sse:
        append(_SSE_LINES)
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


# What an answer's field is to the exchange that receives it (`answer_field`): forwarded as
# it came (plain, the Date, the Content-Type), framing that is dropped (Content-Length,
# Transfer-Encoding), dropped, or one that only `response_head` handles (Connection, whose
# tokens name fields to drop, and Via, which ours extends). The exchange classifies each
# field as it is parsed and keeps the forwarded ones as head parts, so the common answer's
# head (`answer_head`) is a join, not a second pass over the fields.
FORWARD, DATED, TYPED, LENGTH, CODING, DROPPED, GENERAL, LOCATED = range(8)
ANSWER_FIELDS: dict[bytes, int] = {}  # a field name as a backend spells it -> its kind


def answer_field(name: bytes) -> int:
    """The kind of an answer's field named `name` (learned once per spelling, bounded)."""
    low = name.lower()
    if low == b"content-length":
        kind = LENGTH
    elif low == b"transfer-encoding":
        kind = CODING
    elif low in (b"location", b"content-location"):
        kind = LOCATED  # (forwarded, with the backend's own origin taken out)
    else:
        kind = (FORWARD, DROPPED, GENERAL, GENERAL, DATED, TYPED)[
            _learn(name, _RESPONSE_DROP, _RESPONSE_NAMES)]
    if len(ANSWER_FIELDS) >= _LEARNED_MAX:
        ANSWER_FIELDS.clear()
    ANSWER_FIELDS[name] = kind
    return kind


def answer_head(status: int, lines: list[bytes], dated: bool, ours: bytes, length: int | None,
                connection: bytes | None, body: bytes = b"") -> bytes:
    """`response_head` of an answer whose forwarded fields are `lines` already (as
    `name`, `: `, `value`, CRLF parts) and hold none that only `response_head` handles
    (no Connection, no Via, not an event stream); `dated`: a Date was among them. The
    same bytes as `response_head`, without its pass over the fields."""
    try:  # (a subscript costs less than a `get` call)
        parts = [_STATUS_LINES[status]]
    except KeyError:
        parts = [b"HTTP/1.1 %d Unknown\r\n" % status]
    parts += lines
    append = parts.append
    append(_VIA_LINE)
    if not dated:
        append(_date_line())
    append(ours)
    if length is not None:
        try:
            append(_LENGTH_LINES[length])
        except KeyError:
            append(_length_line(length))
    if connection is not None:
        append(_CONNECTION.get(connection) or b"connection: %s\r\n" % connection)
    append(b"\r\n")
    if body:
        append(body)
    return b"".join(parts)


# The Content-Length lines of small answers, formatted once (a lookup costs less than
# formatting the number; bounded by construction: lengths under 4096 only).
_LENGTH_LINES: dict[int, bytes] = {}


def _length_line(length: int) -> bytes:
    line = b"content-length: %d\r\n" % length
    if length < 4096:
        _LENGTH_LINES[length] = line
    return line


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
