"""Finished spans as an OTLP `ExportTraceServiceRequest`, written straight in protobuf wire format.

Owns `encode_spans`: the same message the OTLP exporter's own encoder builds (field for
field; tests/test_otlpwire.py compares the two), without building a protobuf object per
span, attribute and value — that object building was most of a sampled request's cost.
Reads spans only through `ReadableSpan`'s public properties. Anything it does not write
(links, mapping values, ints beyond int64) raises `Unsupported`: the caller then uses the
exporter's own encoder. Pure: no I/O; imports nothing beyond the standard library.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Unsupported", "encode_spans"]

_Q = struct.Struct("<Q").pack  # fixed64
_TIMES = struct.Struct("<BQBQ").pack  # two fixed64 fields: start and end time
_D = struct.Struct("<d").pack  # double
_I = struct.Struct("<I").pack  # fixed32
_SMALL = [bytes((i,)) for i in range(128)]
_INT64 = 1 << 63
_MASK64 = (1 << 64) - 1
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_LOCAL = b"\x85\x01" + _I(_HAS_IS_REMOTE)  # the flags field (16, fixed32)
_REMOTE = b"\x85\x01" + _I(_HAS_IS_REMOTE | _IS_REMOTE)
_KV: dict[tuple[Any, ...], bytes] = {}  # (key, value[, type]) -> KeyValue, encoded
_KV_MAX = 4096
# a longer string is not cached: values that repeat are short (a route's path, a method),
# and a client chooses its path (up to 8 KiB, each request traced on its own traceparent):
# one-off long values would hold tens of MiB here
_KV_LONG = 256
_ENUMS: dict[Any, bytes] = {}  # span kinds and status codes, as their fields


class Unsupported(ValueError):
    """Something this encoder does not write: use the exporter's own encoder."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _text(s: str) -> bytes:
    """UTF-8 (a lone surrogate, which protobuf refuses, becomes "?")."""
    return s.encode("utf-8", "replace")


def _value(v: Any) -> bytes:
    """An AnyValue message."""
    if isinstance(v, str):
        return _field(b"\x0a", _text(v))
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        if not -_INT64 <= v < _INT64:
            raise Unsupported(f"integer out of int64 range: {v}")
        return b"\x18" + _varint(v & _MASK64)
    if isinstance(v, float):
        return b"\x21" + _D(v)
    if v is None:
        return b""
    if isinstance(v, bytes):
        return _field(b"\x3a", v)
    if isinstance(v, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(x)) for x in v))
    raise Unsupported(f"attribute value of type {type(v).__name__}")


def _attributes(out: bytearray, tag: bytes, attrs: Mapping[str, Any] | None) -> None:
    """Repeated KeyValue fields under `tag`, appended to `out`. Most attributes repeat
    from span to span (the method, the route, a status code...): each (key, value) is
    encoded once, then reused."""
    if not attrs:
        return
    for key, v in attrs.items():
        # (True == 1 == 1.0: a value that is not a str is told apart by its type; an
        # array's elements would not be, (1,) == (1.0,): arrays are not cached)
        cls = v.__class__
        if cls is tuple or cls is list:
            kv = _kv(key, v)
        else:
            ck = (key, v) if cls is str else (key, v, cls)
            try:
                kv = _KV[ck]
            except KeyError:
                kv = _kv(key, v)
                if cls is not str or len(v) <= _KV_LONG:
                    if len(_KV) >= _KV_MAX:
                        _KV.clear()
                    _KV[ck] = kv
            except TypeError:  # another unhashable value
                kv = _kv(key, v)
        out += tag
        out += kv


def _kv(key: str, v: Any) -> bytes:
    """A KeyValue message, with its length in front."""
    body = _field(b"\x0a", _text(key)) + _field(b"\x12", _value(v))
    return _varint(len(body)) + body


def _span(out: bytearray, span: Any) -> None:
    """One Span message (its fields, without tag and length) appended to `out`."""
    ctx = span.get_span_context()
    parent = span.parent
    status = span.status
    kind = span.kind
    k = _ENUMS.get(kind)
    if k is None:
        k = _ENUMS[kind] = b"\x30" + _varint(kind.value + 1)
    out += b"\x0a\x10"
    out += ctx.trace_id.to_bytes(16, "big")
    out += b"\x12\x08"
    out += ctx.span_id.to_bytes(8, "big")
    state = ctx.trace_state
    if state:
        out += _field(b"\x1a", _text(",".join(f"{k}={v}" for k, v in state.items())))
    if parent is not None:
        out += b"\x22\x08"
        out += parent.span_id.to_bytes(8, "big")
    out += _field(b"\x2a", _text(span.name))
    out += k
    out += _TIMES(0x39, span.start_time or 0, 0x41, span.end_time or 0)
    _attributes(out, b"\x4a", span.attributes)
    if span.dropped_attributes:
        out += b"\x50" + _varint(span.dropped_attributes)
    for ev in span.events:
        body = bytearray(b"\x09")
        body += _Q(ev.timestamp or 0)
        body += _field(b"\x12", _text(ev.name))
        _attributes(body, b"\x1a", ev.attributes)
        if ev.dropped_attributes:
            body += b"\x20" + _varint(ev.dropped_attributes)
        out += b"\x5a" + _varint(len(body))
        out += body
    if span.dropped_events:
        out += b"\x60" + _varint(span.dropped_events)
    if span.links:
        raise Unsupported("span links")
    if span.dropped_links:
        out += b"\x70" + _varint(span.dropped_links)
    code = status.status_code
    c = _ENUMS.get(code)
    if c is None:
        c = _ENUMS[code] = b"\x18" + _varint(code.value) if code.value else b""
    if status.description:
        out += _field(b"\x7a", _field(b"\x12", _text(status.description)) + c)
    else:
        out += b"\x7a" + _SMALL[len(c)] + c
    out += _REMOTE if parent is not None and parent.is_remote else _LOCAL


def _scope(scope: Any) -> bytes:
    """An InstrumentationScope message (empty for none)."""
    if scope is None:
        return b""
    out = bytearray(_field(b"\x0a", _text(scope.name)))
    if scope.version:
        out += _field(b"\x12", _text(scope.version))
    _attributes(out, b"\x1a", scope.attributes)
    return bytes(out)


def encode_spans(spans: Sequence[Any]) -> bytes:
    """`spans` (ReadableSpan) as one serialised ExportTraceServiceRequest: grouped by
    resource, then by instrumentation scope, in the order they came."""
    groups: dict[int, tuple[Any, dict[Any, bytearray]]] = {}
    one = bytearray()
    for span in spans:
        resource = span.resource
        group = groups.get(id(resource))
        if group is None:
            group = groups[id(resource)] = (resource, {})
        scope = span.instrumentation_scope or None
        encoded = group[1].get(scope)
        if encoded is None:
            encoded = group[1][scope] = bytearray()
        one.clear()
        _span(one, span)
        encoded += b"\x12" + _varint(len(one))
        encoded += one
    out = bytearray()
    for resource, scopes in groups.values():
        body = bytearray()
        _attributes(body, b"\x0a", resource.attributes)
        body = bytearray(_field(b"\x0a", bytes(body)))
        for scope, encoded in scopes.items():
            ss = bytearray(_field(b"\x0a", _scope(scope)))
            ss += encoded
            if scope is not None and scope.schema_url:
                ss += _field(b"\x1a", _text(scope.schema_url))
            body += b"\x12" + _varint(len(ss))
            body += ss
        if resource.schema_url:
            body += _field(b"\x1a", _text(resource.schema_url))
        out += b"\x0a" + _varint(len(body))
        out += body
    return bytes(out)
