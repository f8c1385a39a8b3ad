"""The request head a backend gets (the hot path): the client's end-to-end fields, re-framed.

Owns which of a request's fields are dropped on the way out (hop-by-hop ones, those named in
`Connection`, framing, the client's x-forwarded-*, `x-killgate-*`, and with tracing on its
traceparent: `fieldrules.REQUEST_DROP`), and the head built from the rest in one pass over
them all (`request_head`: a `Connection` field other than `keep-alive` or `close` alone,
a `Via` or `Close` field, a traced request with a traceparent of the client's, a shadow copy). The usual
head is built from the fields the parser already sorted as they came
(`outgoing.Outgoing.request_head`: `wire.name_kind` learns each spelling by the same
rules). Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.dataplane.fieldrules import (
    CONN,
    REQUEST_DROP,
    VIA,
    VIA_FIELD,
    VIA_LINE,
    connection_tokens,
    kept,
    learn,
)
from gateway.dataplane.lengths import HEAD_ENDS, head_end

__all__ = ["request_head"]

_REQUEST_DROP = REQUEST_DROP
# With tracing on, the gateway sends its own traceparent (its CLIENT span is the parent).
_REQUEST_DROP_TRACED = _REQUEST_DROP | {b"traceparent"}
_REQUEST_NAMES: dict[bytes, int] = {}
_TRACED_NAMES: dict[bytes, int] = {}


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
            act = learn(name, drop, cache, answer=False)
        if not act:  # KEEP (one extend by a tuple costs less than four appends)
            parts += (name, b": ", value, b"\r\n")
        elif act == CONN:
            (conn := conn or []).append(value)
        elif act == VIA_FIELD:
            (via := via or []).append(value)
    if conn:  # (rare: a second pass; a Via it names goes too, ours stays)
        named = connection_tokens(conn)
        parts = kept(b"".join(parts[:line_parts]), raw, drop, cache, named, answer=False)
        if b"via" in named:
            via = None
    if length is not None:  # (the framing line and the head's end, in one part)
        try:  # (a subscript costs less than a `get` call, or than formatting the line)
            framing = HEAD_ENDS[length]
        except KeyError:
            framing = head_end(length)
    else:
        framing = b"transfer-encoding: chunked\r\n\r\n"
    parts += (VIA_LINE if via is None else b"via: %s\r\n" % b", ".join([*via, VIA]),
              forwarded, framing, body)
    return b"".join(parts)

