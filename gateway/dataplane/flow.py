"""Flow control of a data-plane connection, both ways: reading the client paused while the
proxy is not taking its body (or requests queue), and writing to it watched while it reads
too slowly (from the moment the transport says its buffer is full: `send_timeout` without
progress, or below `body_min_rate`, judged by `Deadlines._taking`). The rate is judged over
all the holdups of the connection (`held_s`, `held_taken`: only the time the client held us
up counts, not the time it waited for the backend), with one grace: judged per pause, a
client taking the ~48 KiB that end one a little faster than a fresh grace allowed, again and
again, held the answer for ever at about half the rate (tests/test_send_rate_pauses.py).

A base of `protocol.HttpProtocol`, which owns the connection and the state these read. What
was read but not parsed while reading was paused (`held`) is parsed first, in a loop turn of
its own (`_replay`), before reading resumes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from gateway.dataplane.clock import Clock
from gateway.dataplane.request import ClientGone, Request
from gateway.dataplane.wire import Limits, carried
from gateway.sockets import unsent

__all__ = ["Flow"]


class Flow:
    """pause/resume reading and writing (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    loop: asyncio.AbstractEventLoop
    limits: Limits
    transport: asyncio.Transport | None
    queue: deque[Request]
    dispatching: bool
    closed: bool
    held: bytes
    replaying: bool
    clock: Clock
    read_paused: bool
    read_paused_at: float
    rate_req: Request | None
    rate_from: float
    write_paused: bool
    paused_at: float
    held_s: float
    held_taken: int
    sending: int
    send_base: int
    send_look: float
    deadline: float
    drainer: asyncio.Future[None] | None
    _arm: Callable[[float], None]
    _dispatch: Callable[[], None]
    _replay: Callable[[], None]

    def pause_writing(self) -> None:
        self.write_paused = True
        self.paused_at = now = self.loop.time()
        t = self.transport  # (what it holds from now on is what the client has to take)
        self.sending = self.send_base = unsent(t)
        self.send_look = now + self.limits.send_timeout
        self._arm(self.send_look)  # (`Deadlines._taking` looks then)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.paused_at:  # this holdup counts in the next one's rate
            self.held_s += self.loop.time() - self.paused_at
            self.held_taken = carried(self.held_s, self.held_taken + max(
                0, self.send_base - unsent(self.transport)), self.limits)
        self.paused_at = 0.0
        d = self.drainer
        if d is not None and not d.done():
            d.set_result(None)
        if self.queue and not self.dispatching:
            self._dispatch()  # a request held while the client was not reading

    def _pause(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.read_paused_at = self.clock.now  # (every caller runs on bytes just read)
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            if self.held:  # what was read first is parsed first, in a loop turn of its own
                if not self.replaying:
                    self.replaying = True
                    self.loop.call_soon(self._replay)
                return
            self.read_paused = False
            self.transport.resume_reading()
            if self.queue:  # a stall while we did not read is not the client's
                req = self.queue[0]
                req.last_body = now = self.loop.time()
                if req is self.rate_req:  # nor against its pace: its clock stood still
                    # (from when it started, if the pause began before: an earlier request's)
                    self.rate_from += now - max(self.read_paused_at, self.rate_from)
                if not (req.dispatched or req.body_done):  # a buffered body's wait
                    # begins (`deadlines.py`; no later head has begun: none can yet)
                    self.deadline = now + self.limits.body_timeout

    def reading_body(self, req: Request) -> None:
        """The proxy waits for `req`'s body: read, and watch the body deadline. (Whatever is
        buffered: what it waits for is more than that, a peek of `model_peek_bytes` past
        BODY_HIGH say, and with reading paused it would wait for ever, with no deadline.)"""
        if self.read_paused and self.queue and self.queue[0] is req:
            self._resume()
        limits = self.limits
        if req is not self.rate_req:  # its first wait: the pace is judged from now (a
            self.rate_req = req  # 100-continue body is asked for now; before, we did not
            self.rate_from = self.loop.time()  # read it, or did not need it yet)
        due = req.last_body + limits.body_timeout
        if limits.body_min_rate:  # (`deadlines.rate_due`: after a pause of our reading, it
            # may come before the next pause's deadline, and the timer is never late)
            due = min(due, self.rate_from + limits.body_timeout
                      + req.body_size / limits.body_min_rate)
        self._arm(due)

    def body_taken(self, req: Request) -> None:
        if self.read_paused and len(self.queue) <= 1:
            self._resume()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        while self.write_paused and not self.closed:
            fut = self.loop.create_future()
            self.drainer = fut
            try:
                await fut
            finally:
                self.drainer = None
        if self.closed:
            raise ClientGone("the client went away")
