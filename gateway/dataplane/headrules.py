"""What a request head's fields mean to the connection, and why a whole head is refused.

Owns the rules the parser callbacks (parsing.py) apply: a second Host, a transfer coding
other than chunked, an Upgrade, a field name with `_` (read as `-` by some backends) are
refused; Expect: 100-continue and the first traceparent are noted; an overlong
Content-Length of leading zeros is read; a request line that names RTSP or ICE (which
llhttp parses as HTTP) is found; a head that is not HTTP/1.1 (or 1.0), a CONNECT,
chunked HTTP/1.0, or HTTP/1.1 without Host is refused whole. Pure: no I/O.
"""

from __future__ import annotations

from gateway.dataplane.fieldrules import closes
from gateway.dataplane.request import Request
from gateway.dataplane.wire import (
    CHUNKED,
    CLOSE,
    CONNECTION,
    EXPECT,
    HOST,
    TRACEPARENT,
    UPGRADE,
    VIA,
    Refuse,
)

__all__ = ["FOREIGN", "KEEP_ALIVE", "foreign_line", "head_field", "refusal"]

#: the spellings of a `Connection: keep-alive` value matched without lower-casing it (a set
#: lookup costs less than `bytes.lower`, a C method call); others are lower-cased
KEEP_ALIVE = frozenset({b"keep-alive", b"Keep-Alive", b"Keep-alive"})


def head_field(req: Request, kind: int, name: bytes, value: bytes) -> None:
    """`req`'s head field that means something to the connection (see `wire.name_kind`),
    other than a first Host, a Content-Length or one forwarded or dropped as such: noted on
    `req`, or refused (Refuse)."""
    if kind == HOST:
        raise Refuse(400, "more than one Host header")
    if kind == CONNECTION:  # (Connection or Proxy-Connection: most clients send one)
        # `keep-alive` alone (any case; llhttp strips the OWS before a value, `on_header`
        # the OWS after it) names no field but Keep-Alive, hop-by-hop and never forwarded,
        # and on HTTP/1.1 leaves llhttp's keep-alive on: the head the parser sorted is the
        # backend's (tests/test_connection_fast.py). `close` alone names a field `Close`
        # only (a reserved name: one that comes takes the pass, kind CLOSE) and turns
        # keep-alive off, as llhttp would (on HTTP/1.0 llhttp is asked anyway). Any other
        # value (a list, a field's name) may name a kept field: the pass over all the
        # fields, and llhttp asked (`Parsing.on_headers_complete`), unless a `close` among
        # its tokens turned keep-alive off: on HTTP/1.0 llhttp keeps `keep-alive, close`
        # (or a `keep-alive` field and a `close` one) alive, and `close` wins (RFC 9112
        # 9.6)
        if value not in KEEP_ALIVE:
            low = value.lower()
            if low == b"close":
                req.keep_alive = False
            elif low != b"keep-alive":
                req.reread = True
                if b"close" in low and closes(low):
                    req.keep_alive = False
    elif kind == CHUNKED:
        # llhttp checked: chunked last, no Content-Length; but it takes any codings
        # before it ("gzip, chunked"), which we would forward de-chunked as if the
        # bytes were not coded at all (nginx answers those 501)
        if value.strip(b" \t").lower() != b"chunked":
            raise Refuse(400, "only the chunked transfer coding is accepted; send a "
                              "compressed body with Content-Encoding instead")
        req.chunked = True
    elif kind == EXPECT:
        req.expect_continue = value.lower() == b"100-continue"
    elif kind == UPGRADE:
        req.refused = (400, "protocol upgrades are not proxied")
    elif kind == TRACEPARENT:
        if req.traceparent is None:  # (the first, as a tracer reads it; noted here so
            req.traceparent = value  # that the sampling decision scans no fields)
        req.kept += (name, b": ", value, b"\r\n")  # (forwarded unless the request is traced)
    elif kind in (VIA, CLOSE):  # (rare; the client's Via is extended with ours, or dropped
        # when a Connection names it, and a field `Close` is when `Connection: close` came,
        # before it or after: the backend's head from all the fields)
        req.reread = True
    else:
        alias = name.lower().replace(b"_", b"-")
        raise Refuse(400, f"the header {name.decode('latin-1')!r} reads as "
                           f"{alias.decode('latin-1')!r} to some backends; send it with '-'")


#: a request line that names RTSP/x.y or ICE/x.y: llhttp parses those as HTTP of the
#: same numbers (its version says 1.0), and they are no HTTP request
FOREIGN = (400, "the request line names a protocol other than HTTP; use HTTP/1.1")


def foreign_line(data: bytes | bytearray, method: bytes, target: bytes,
                 first: bytes | None) -> bool:
    """Whether the request line `method target <protocol>/x.y` in `data` (bytes that hold it,
    maybe among others: a pipelined request's, a body's, a field's value) names another
    protocol than HTTP: one spelling of it, followed by the request's first field `first`
    (its name as sent; None: the head has none), names RTSP/ or ICE/, or none names HTTP/.
    (The line alone is no proof: a body or a field value before or after it may hold the
    same method and target with RTSP/1.0, and a valid HTTP request was refused.)"""
    needle = method + b" " + target + b" "
    after = b"\r\n" + (first + b":" if first is not None else b"\r\n")
    http = False
    i = data.find(needle)
    while i >= 0:
        j = i + len(needle)
        k = data.find(b"/", j, j + 5)  # (after "HTTP", "RTSP" or "ICE")
        if k >= 0 and data.startswith(after, k + 4):  # ("/1.1", then the first field)
            protocol = data[j:k]
            if protocol in (b"RTSP", b"ICE"):
                return True
            http = http or protocol == b"HTTP"
        i = data.find(needle, i + 1)
    return not http


def refusal(req: Request, version: str) -> tuple[int, str] | None:
    """Why a whole head is refused, if it is (the rare heads: not HTTP/1.1, CONNECT, or no
    Host; an Upgrade field was refused as it came)."""
    if version != "1.1" and not req.http10:
        return (400, f"HTTP/{version} is not spoken here; use HTTP/1.1")
    if req.method == b"CONNECT":
        return (400, "protocol upgrades are not proxied")
    if req.http10 and req.chunked:
        return (400, "Transfer-Encoding is not allowed in HTTP/1.0 requests")
    if req.host is None and not req.http10:
        return (400, "an HTTP/1.1 request needs a Host header")
    return None
