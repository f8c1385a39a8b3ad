"""Which fields cross the gateway, in either direction (RFC 9110 §7.6): the rules that the
request head (requesthead.py) and the answer heads (headers.py, answerfields.py) share.

Hop-by-hop fields and those named in `Connection` are dropped both ways, `via` is extended
with ours, `x-killgate-*` never comes from outside, nor a client's `x-forwarded-*`. Pure
functions and constants over raw bytes; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CONN",
    "CTYPE",
    "DATE",
    "DROP",
    "HOP_BY_HOP",
    "KEEP",
    "LEARNED_MAX",
    "REQUEST_DROP",
    "RESPONSE_DROP",
    "RESPONSE_NAMES",
    "VIA",
    "VIA_FIELD",
    "VIA_LINE",
    "RawHeaders",
    "action",
    "closes",
    "connection_tokens",
    "kept",
    "learn",
]

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})
RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
#: a request's fields rebuilt by the gateway or meaningless past it (with tracing on, the
#: client's traceparent too: `requesthead`)
REQUEST_DROP = HOP_BY_HOP | {
    b"host", b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"forwarded", b"x-real-ip",
}
_INTERNAL = b"x-killgate-"
#: the gateway writes a request's x-forwarded-* fields (-for, -proto, -host); a client's
#: others (-port, -prefix, -scheme, -ssl: frameworks build URLs and decide the scheme from
#: them) would reach the backend beside ours, believed as ours: dropped too
_FORWARDED = b"x-forwarded-"
VIA = b"1.1 killgate"
VIA_LINE = b"via: %s\r\n" % VIA


def closes(value: bytes) -> bool:
    """Whether a `Connection` value lists the `close` token (any case; RFC 9110 7.6.1: a
    comma-separated list, OWS around each element), which wins over a `keep-alive` beside
    it (RFC 9112 9.6: llhttp keeps an HTTP/1.0 `keep-alive, close` alive)."""
    return any(t.strip(b" \t").lower() == b"close" for t in value.split(b","))


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
KEEP, DROP, CONN, VIA_FIELD, DATE, CTYPE = 0, 1, 2, 3, 4, 5
LEARNED_MAX = 4096  # names a client can invent are bounded: the cache starts over past it
#: what each field of a backend's answer does (by its spelling): shared by `response_head`'s
#: pass and `answer_field`, which learn with the same rules
RESPONSE_NAMES: dict[bytes, int] = {}


def action(low: bytes, drop: frozenset[bytes], answer: bool = True) -> int:
    """What the field of lower-cased name `low` does when it crosses (`drop`: the names
    dropped this way; `answer`: a backend's answer, else a client's request)."""
    if low in drop or low.startswith(_INTERNAL) or (not answer and low.startswith(_FORWARDED)):
        act = CONN if low == b"connection" else DROP
    elif low == b"via":
        act = VIA_FIELD
    elif answer and low == b"date":  # (Date and Content-Type matter in answers only)
        act = DATE
    elif answer and low == b"content-type":
        act = CTYPE
    else:
        act = KEEP
    return act


def learn(name: bytes, drop: frozenset[bytes], cache: dict[bytes, int],
          answer: bool = True) -> int:
    """What the field `name` does when it crosses (`action`), remembered in `cache`
    (bounded)."""
    act = action(name.lower(), drop, answer)
    if len(cache) >= LEARNED_MAX:
        cache.clear()
    cache[name] = act
    return act


def kept(first: bytes, raw: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes],
         cache: dict[bytes, int], named: frozenset[bytes],
         answer: bool = True) -> list[bytes]:
    """The parts again, without the fields that `Connection` names (rare: a second pass)."""
    parts = [first]
    for name, value in raw:
        act = cache.get(name)
        if act is None:
            act = learn(name, drop, cache, answer)
        if act in (KEEP, DATE, CTYPE) and name.lower() not in named:
            parts += (name, b": ", value, b"\r\n")
    return parts
