"""Header hygiene for a proxy that re-frames, never forwards bytes (RFC 9110 §7.6).

Owns the rules for which fields cross the gateway in each direction: hop-by-hop fields
and those named in `Connection` are dropped both ways, framing fields are rebuilt,
`x-forwarded-*` and `via` are ours, and `x-killgate-*` never comes from outside.
Pure functions over raw (bytes, bytes) pairs; no I/O.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict

__all__ = [
    "RawHeaders",
    "connection_tokens",
    "declared_charset",
    "request_head",
    "response_head",
    "response_multidict",
    "undecodable",
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


def _filtered(raw: Iterable[tuple[bytes, bytes]],
              drop: frozenset[bytes]) -> tuple[RawHeaders, list[bytes], list[bytes]]:
    kept: RawHeaders = []
    conn: list[bytes] = []
    via: list[bytes] = []
    for name, value in raw:
        low = name.lower()
        if low in drop or low.startswith(_INTERNAL):
            if low == b"connection":
                conn.append(value)
            continue
        if low == b"via":
            via.append(value)
            continue
        kept.append((name, value))
    if conn:
        named = connection_tokens(conn)
        kept = [(n, v) for n, v in kept if n.lower() not in named]
    return kept, via, conn


def _raw_lines(first: bytes, raw: Iterable[tuple[bytes, bytes]],
               drop: frozenset[bytes]) -> tuple[list[bytes], bool]:
    """`first`, one `name: value` line per end-to-end field and our Via line (one pass,
    bytes only), and whether a Date field was among them."""
    parts = [first]
    conn: list[bytes] | None = None
    via: list[bytes] | None = None
    dated = False
    for name, value in raw:
        low = name.lower()
        if low in drop or low.startswith(_INTERNAL):
            if low == b"connection":
                (conn := conn or []).append(value)
            continue
        if low == b"via":
            (via := via or []).append(value)
            continue
        if low == b"date":
            dated = True
        parts.append(b"%s: %s\r\n" % (name, value))
    if conn:
        named = connection_tokens(conn)
        parts = [parts[0]] + [p for p in parts[1:] if p.split(b":", 1)[0].lower() not in named]
    parts.append(b"via: %s\r\n" % b", ".join([*(via or ()), VIA]))
    return parts, dated


def request_head(first_line: bytes, raw: Iterable[tuple[bytes, bytes]], forwarded: bytes,
                 length: int | None, traced: bool = False) -> bytes:
    """The whole request head for a backend, built in one pass (the hot path).

    `first_line` already holds the request line and our Host; `forwarded` the
    x-forwarded-* lines (rebuilt from the socket peer: a client cannot spoof them), and,
    when `traced`, our traceparent (the client's is dropped).
    """
    parts, _ = _raw_lines(first_line, raw, _REQUEST_DROP_TRACED if traced else _REQUEST_DROP)
    parts.append(forwarded)
    if length is not None:
        parts.append(b"content-length: %d\r\n\r\n" % length)
    else:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
    return b"".join(parts)


def response_multidict(raw: Iterable[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """End-to-end response fields plus via, as the CIMultiDict aiohttp wants (one pass)."""
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    conn: list[bytes] | None = None
    via = "1.1 killgate"
    for name, value in raw:
        low = name.lower()
        if low in _RESPONSE_DROP or low.startswith(_INTERNAL):
            if low == b"connection":
                (conn := conn or []).append(value)
            continue
        if low == b"via":
            via = value.decode("latin-1") + ", " + via
            continue
        add(name.decode("latin-1"), value.decode("latin-1"))
    if conn:
        for tok in connection_tokens(conn):
            out.popall(tok.decode("latin-1"), None)
    add("via", via)
    return out


_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}
_date_cache: list[object] = [0, b""]


def _date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]  # type: ignore[return-value]


def response_head(status: int, raw: Iterable[tuple[bytes, bytes]], ours: bytes, length: int,
                  connection: bytes | None) -> bytes:
    """A whole HTTP/1.1 response head for a complete answer, from the backend's raw
    fields (the hot path: no decoding, one pass). Same rules as `response_multidict`;
    `ours` holds the x-killgate-* lines, `connection` an explicit Connection value."""
    status_line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    parts, dated = _raw_lines(status_line, raw, _RESPONSE_DROP)
    if not dated:
        parts.append(b"date: %s\r\n" % _date())
    parts.append(ours)
    parts.append(b"content-length: %d\r\n" % length)
    if connection is not None:
        parts.append(b"connection: %s\r\n" % connection)
    parts.append(b"\r\n")
    return b"".join(parts)


_SURROGATE = re.compile("[\ud800-\udfff]")


def undecodable(values: Iterable[str]) -> str | None:
    """The first field value that is not valid UTF-8 (as a parser that decodes with
    surrogateescape hands it over), or None. Routing reads Host, match headers, the sticky
    header and pins as text; bytes that are not UTF-8 would be read one way by us and
    another by the backend, and once raised a traceback per request."""
    for v in values:
        if not v.isascii() and _SURROGATE.search(v):
            return v
    return None


def declared_charset(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type, lower-cased and unquoted, or None."""
    if not content_type or "charset" not in content_type.lower():
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
