"""W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/): parse and format.

Pure and dependency-free: the head-sampling decision and the admin API's audit trace id
need the incoming trace context without building OpenTelemetry objects (an unsampled
request must cost next to nothing). Anything malformed parses as None (a new trace).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ParentContext", "format_traceparent", "parse_traceparent", "trace_id_hex"]

_HEX = frozenset("0123456789abcdef")


class ParentContext(NamedTuple):
    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: str | None) -> ParentContext | None:
    """`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; None when absent or invalid.

    Follows the spec's parsing rules: version `ff` is invalid; a version above 00 may carry
    more fields after the four we know (ignored); all-zero ids are invalid; upper-case hex
    is invalid."""
    if value is None:
        return None
    v = value.strip()
    if len(v) < 55 or v[2] != "-" or v[35] != "-" or v[52] != "-":
        return None
    version = v[:2]
    if version == "00":
        if len(v) != 55:
            return None
    elif version == "ff" or (len(v) > 55 and v[55] != "-"):
        return None
    if not _HEX.issuperset(v[:2]) or not _HEX.issuperset(v[3:35]) \
            or not _HEX.issuperset(v[36:52]) or not _HEX.issuperset(v[53:55]):
        return None
    trace_id = int(v[3:35], 16)
    span_id = int(v[36:52], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return ParentContext(trace_id, span_id, int(v[53:55], 16))


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def trace_id_hex(trace_id: int) -> str:
    return f"{trace_id:032x}"
