"""The shapes redis gives the side stores' replies (heartbeats, idempotency records, the
audit trim's reads and script), checked before they are read: any other (a proxy between
that mangles replies, a server that is not redis) is StoreUnavailable in `odd_reply`'s
words, never a TypeError/ValueError out of an unpacking, nor an answer taken as a change
made. Pure predicates and `shaped`; the commit path's own are in rediscommit.py and
redisread.py (tests/test_resp_shapes*.py).
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.state.redislink import odd_reply

__all__ = ["digits", "entries", "flat_pairs", "integer", "shaped", "stream_id", "text"]

#: a stream entry's id as redis gives it ("<ms>-<seq>", each a 64-bit number)
_STREAM_ID = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")


def shaped(what: str, reply: Any, ok: bool, expected: str) -> Any:
    """`reply` when `ok` (its shape checked by the caller), else StoreUnavailable saying
    what came instead of `expected`."""
    if not ok:
        raise StoreUnavailable(odd_reply(what, reply, expected))
    return reply


def integer(v: Any) -> bool:
    return type(v) is int


def text(v: Any, nil: bool = False) -> bool:
    """A string reply (or nil, with `nil`)."""
    return type(v) is bytes or (nil and v is None)


def digits(v: Any) -> bool:
    """A string reply of decimal digits (TIME's parts), or an integer."""
    return type(v) is int or (type(v) is bytes and v.isdigit() and len(v) <= 20)


def flat_pairs(v: Any) -> bool:
    """HGETALL's answer: field, value, ... (strings, an even count)."""
    return type(v) is list and len(v) % 2 == 0 and all(type(x) is bytes for x in v)


def stream_id(v: Any) -> bool:
    """A stream entry's id: any other string (not UTF-8: a UnicodeDecodeError where it is
    read; not an id: taken for the trail's start changed) is no answer of redis's."""
    return type(v) is bytes and _STREAM_ID.fullmatch(v) is not None


def entries(v: Any) -> bool:
    """XRANGE's answer: [[id, [field, value, ...]], ...]."""
    return type(v) is list and all(
        type(e) is list and len(e) == 2 and stream_id(e[0]) and flat_pairs(e[1])
        for e in v)
