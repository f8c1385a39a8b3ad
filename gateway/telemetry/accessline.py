"""An access log line: one finished request as one JSON line, built by hand (the writer
thread of telemetry/accesslog.py formats them), and a record's client text cut to what its
line shows before it waits in the buffer. Client-sent values (path, request id) are
JSON-escaped and ASCII: a line is always one line. Pure: no I/O.
"""

from __future__ import annotations

import time
from functools import lru_cache
from json.encoder import encode_basestring_ascii as dumps  # (a str in quotes)

from gateway import redact
from gateway.telemetry.record import RequestRecord, arm_of

__all__ = ["MAX_PATH", "MAX_REQUEST_ID", "cut", "line"]

MAX_PATH = 1024
MAX_REQUEST_ID = 128


def _ms(seconds: float) -> str:
    """Milliseconds with 3 decimals, as a JSON number (integer arithmetic: cheaper than
    rounding a float and printing it)."""
    ms, us = divmod(max(0, round(seconds * 1_000_000)), 1000)
    return f"{ms}.{us:03d}"


@lru_cache(maxsize=8)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def _name(v: str) -> str:
    """A config name or an enum (route and version names allow only [A-Za-z0-9_.-]): no
    escaping needed. Empty is null."""
    return f'"{v}"' if v else "null"


def _text(v: str) -> str:
    """Anything a client sent: JSON-escaped, ASCII only. Empty is null."""
    return dumps(v) if v else "null"


# What a route's answers share (route, version, decision, arm, status), built once each.
_HEADS: dict[tuple[str, str, str, str, int], str] = {}
_LINE = ('{"time":"%s.%03dZ",%s"duration_ms":%s,"upstream_ms":%s,"ttfb_ms":%s,"bytes_in":%d,'
         '"bytes_out":%d,"client":%s,"method":%s,"path":%s,"request_id":%s,"trace_id":%s}')


def _head(key: tuple[str, str, str, str, int]) -> str:
    route, version, decision, stable, status = key
    head = (f'"route":{_name(route)},"version":{_name(version)},'
            f'"decision":{_name(decision)},"arm":{_name(arm_of(decision, version, stable))},'
            f'"status":{status},')
    if len(_HEADS) >= 4096:
        _HEADS.clear()
    _HEADS[key] = head
    return head


def line(rec: RequestRecord, wall: float) -> str:
    """One request as one JSON line (`wall`: the Unix time it finished). Built by hand, in
    one %-format with the fields every answer of a route shares built once: json.dumps of a
    dict and datetime formatting cost several times more, in the thread that shares the
    GIL with the event loop."""
    sec = int(wall)
    key = (rec.route, rec.version, rec.decision, rec.stable, rec.status)
    up = rec.upstream
    fb = rec.first_byte
    peer = rec.peer
    rid = rec.request_id
    tid = rec.trace_id
    path = rec.path
    if path[:1] != "/":  # an absolute-form target (refused) may carry userinfo
        path = redact.url(path)
    return _LINE % (
        _second(sec), (wall - sec) * 1000, _HEADS.get(key) or _head(key),
        _ms(rec.end - rec.start), _ms(up) if up >= 0 else "null",
        _ms(fb - rec.start) if fb else "null", rec.bytes_in, rec.bytes_out,
        dumps(peer) if peer else "null", dumps(rec.method), dumps(path[:MAX_PATH]),
        dumps(rid[:MAX_REQUEST_ID]) if rid else "null", dumps(tid) if tid else "null")


def cut(rec: RequestRecord) -> None:
    """Cut a record's client text to what its line shows, before it waits in the buffer: a
    client's target and x-request-id run to 8 KiB each, and a full buffer of them (a stalled
    output is when it fills) would hold 16 times the memory its size suggests."""
    path = rec.path
    if path[:1] != "/":  # (redacted whole first: the userinfo may end past the cut)
        path = redact.url(path)
    rec.path = path[:MAX_PATH]
    rec.request_id = rec.request_id[:MAX_REQUEST_ID]
