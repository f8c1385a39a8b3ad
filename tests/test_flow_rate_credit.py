"""Sans-I/O: a pause of reading credited to a body's rate clock (`Flow._resume`) counts only
the part after that clock started. A pause that began before it (reading paused for an
earlier pipelined request, the resume deferred while held bytes are replayed) was
credited whole, so the body was judged against a pace clock started in the future of
when it began. Found by review (impleft item 3)."""

from __future__ import annotations

from collections import deque
from typing import Any

from gateway.dataplane.flow import Flow
from gateway.dataplane.request import Request


class _Loop:
    def __init__(self) -> None:
        self.t = 0.0

    def time(self) -> float:
        return self.t


class _Transport:
    def resume_reading(self) -> None: ...


class _Conn(Flow):
    def __init__(self, loop: Any, limits: Any) -> None:
        self.loop, self.limits, self.transport = loop, limits, _Transport()
        self.closed = self.replaying = False
        self.held = b""


def test_a_pause_begun_before_the_rate_clock_is_credited_from_the_clock() -> None:
    from gateway.dataplane.wire import Limits

    loop = _Loop()
    conn = _Conn(loop, Limits())
    req = Request()
    req.dispatched = req.body_done = False
    conn.queue = deque([req])
    conn.read_paused, conn.read_paused_at = True, 10.0  # paused for an earlier request
    conn.rate_req, conn.rate_from = req, 11.5  # its clock started 1.5 s into the pause
    loop.t = 12.0
    conn._resume()
    assert not conn.read_paused
    assert conn.rate_from == 12.0  # (before: 13.5, the 1.5 s before its clock credited)


def test_a_pause_within_the_rate_clock_is_credited_whole() -> None:
    from gateway.dataplane.wire import Limits

    loop = _Loop()
    conn = _Conn(loop, Limits())
    req = Request()
    req.dispatched = req.body_done = False
    conn.queue = deque([req])
    conn.rate_req, conn.rate_from = req, 5.0
    conn.read_paused, conn.read_paused_at = True, 10.0
    loop.t = 12.0
    conn._resume()
    assert conn.rate_from == 7.0
