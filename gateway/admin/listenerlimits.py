"""The admin listener's limits, its error bodies, and the check of a head that came whole.

Owns `Limits` (the admin port's deadlines and caps, and the counter of what they refuse),
`error_body` (the JSON of an answer the listener gives itself), and `head_limit`: a head
that arrived in one read, but larger than the cap, is refused as one that arrived in pieces
(which admin/listener.py's protocol cuts off while it grows); `head_size` and `head_refusal`
are its parts, which admin/front.py's one middleware runs first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from aiohttp import web

__all__ = ["MAX_HEAD_BYTES", "Limits", "error_body", "head_limit", "head_refusal", "head_size"]

MAX_HEAD_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float
    keepalive_timeout: float
    max_connections: int
    max_head_bytes: int = MAX_HEAD_BYTES
    send_timeout: float = 60.0  # an answer the client takes nothing of for this long: closed
    #: bytes/s a client holding up its answers must take on average, after `send_timeout`
    #: of grace (the data port's `server.body_min_rate`; 0: off)
    send_min_rate: int = 0
    on_refused: Callable[[str], None] = lambda why: None  # "connections", "head_size", "timeout"


def _json(status: int, type_: str, message: str) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message}}).encode()



def error_body(status: int, type_: str, message: str) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message}}).encode()


def head_size(request: web.Request) -> int:
    """The request head's size as it came (request line, fields, their separators)."""
    raw = request.raw_headers
    # (the fields' bytes joined and measured in C: a generator over them was ~5k
    # instructions of every admin call, a kill's before its commit leaves)
    return len(request.method) + len(request.raw_path) + 11 + 4 * len(raw) + len(
        b"".join(chain.from_iterable(raw)))


def head_refusal(limits: Limits) -> web.Response:
    """The 431 for a head over `limits.max_head_bytes` (counted; the connection closed)."""
    limits.on_refused("head_size")
    resp = web.Response(status=431, content_type="application/json", body=error_body(
        431, "headers_too_large", f"the request head exceeds {limits.max_head_bytes} bytes"))
    resp.force_close()
    return resp


def head_limit(limits: Limits) -> Any:
    """The middleware that refuses a head larger than `limits.max_head_bytes` with 431."""

    @web.middleware
    async def head_limit(request: web.Request, handler: Any) -> web.StreamResponse:
        if head_size(request) > limits.max_head_bytes:
            return head_refusal(limits)
        return await handler(request)

    return head_limit
