"""The deadlines of a data-plane connection, on one timer re-armed lazily: the head's
(`header_timeout`, `keepalive_timeout`), the body's (`body_timeout` between body bytes while
we read; a body buffered before its request goes on, at most SMALL_BODY, whole within
`body_timeout` of its head) and the client's reading of an answer it holds up
(`send_timeout` without progress, `body_min_rate` on average: `_taking`). A base of
`protocol.HttpProtocol`, which owns the connection and the state these read.

A buffered body's deadline is the connection's `deadline` (free while a request is in the
queue: the next head's is set when it begins): set when its wait begins (its head complete at
the front of the queue, or reading resumed with it at the front), so that it costs no timer
and no field of its own. Without it, a byte every `body_timeout - 1` seconds held the
connection without end, a request in progress that `max_connections` could never reclaim.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from gateway.dataplane.clock import Clock
from gateway.dataplane.request import BodyTimeout, Request
from gateway.dataplane.wire import SMALL_BODY, Limits, Server, carried
from gateway.log import event
from gateway.sockets import unsent

__all__ = ["PACE_GRACE", "Deadlines", "buffering", "rate_due", "send_due"]

log = logging.getLogger("killgate.protocol")

#: seconds after its head before a small body's pace is judged at the connection cap
#: (`Deadlines._slow_body`): its first bytes may be a round trip behind
PACE_GRACE = 1.0


def rate_due(since: float, size: int, limits: Limits) -> float:
    """When a body read since `since` (its clock: our pauses of reading do not count),
    `size` bytes of it in so far, falls below `limits.body_min_rate` on average after the
    grace of `body_timeout` (mod_reqtimeout's `MinRate`: each `body_min_rate` bytes buy a
    second more). Pure; its caller checks that the rate is on (not 0)."""
    return since + limits.body_timeout + size / limits.body_min_rate


def send_due(since: float, taken: int, limits: Limits) -> float:
    """When a client holding up an answer since `since` (`Deadlines._taking`), `taken` bytes
    of it taken since, falls below `limits.body_min_rate` on average after the grace of
    `send_timeout`: `rate_due`'s rule for the other direction. Pure; its caller checks that
    the rate is on (not 0)."""
    return since + limits.send_timeout + taken / limits.body_min_rate


def buffering(req: Request) -> bool:
    """`req`'s body is read whole before it goes on (its head is in, its body is not): one
    of at most SMALL_BODY bytes, sized, with no 100-continue, not refused nor handed on."""
    cl = req.content_length
    return (not req.body_done and not req.dispatched and req.refused is None
            and not req.chunked and not req.expect_continue
            and cl is not None and cl <= SMALL_BODY)


class Deadlines:
    """The timer and what it enforces (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    loop: asyncio.AbstractEventLoop
    clock: Clock
    server: Server
    limits: Limits
    queue: deque[Request]
    timer: asyncio.TimerHandle | None
    timer_at: float
    closed: bool
    deadline: float
    read_paused: bool
    write_paused: bool
    paused_at: float  # since when the client holds up an answer (`_taking`); 0.0: it does not
    send_base: int  # what the transport held of it then
    held_s: float  # the connection's earlier holdups (`Flow.resume_writing`)
    held_taken: int  # and what its client took in them
    send_look: float  # when the next look at it is due
    stopped: bool
    linger_end: float
    parsing: Request | None
    rate_req: Request | None
    rate_from: float
    sending: int  # what the transport held of the last answer at the last look (`_sending`)
    transport: asyncio.Transport | None
    remote: str | None
    abort: Callable[[], None]
    _dispatch: Callable[[], None]

    def _arm(self, when: float) -> None:
        """One timer per connection: moved earlier when needed, never later (a timer that
        fires early looks at the state and re-arms for what is next)."""
        t = self.timer
        if t is not None:
            if when >= self.timer_at:
                return
            t.cancel()
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.closed:
            return
        # (the shared clock too: a 408 or a cut this timer brings is stamped now, not at the
        # last socket event)
        self.clock.now = now = self.loop.time()
        nxt = float("inf")
        limits = self.limits
        if not self.queue:  # waiting for a head, or in the middle of one
            if now >= self.deadline:
                if self.parsing is not None:
                    nxt = 0.0
                elif self.write_paused:  # (looked at below: the transport's buffer is full)
                    nxt = now + limits.send_timeout
                else:
                    nxt = self._sending(now)
                if not nxt:
                    self.abort()  # slowloris, an idle socket, or a kept-alive one gone quiet
                    return
            else:
                nxt = self.deadline
        else:
            req = self.queue[0]
            if not req.body_done and not self.read_paused and req.body_error is None:
                due = req.last_body + limits.body_timeout
                whole = self.deadline <= due and buffering(req)
                slow = False
                if whole:  # a buffered body: whole by its deadline, however it trickles
                    due = self.deadline
                elif req is self.rate_req and limits.body_min_rate:  # (`rate_due`)
                    paced = rate_due(self.rate_from, req.body_size, limits)
                    if paced < due:
                        due, slow = paced, True
                if now >= due:
                    self._body_timeout(req, whole, slow)
                else:
                    nxt = due
        if self.write_paused and self.paused_at:
            due = self.send_look
            if now >= due:
                due = self._taking(now)
                if not due:
                    self.abort()  # the answer's backend exchange is freed by connection_lost
                    return
            nxt = min(nxt, due)
        if nxt != float("inf"):
            self._arm(nxt)

    def _sending(self, now: float) -> float:
        """When to look again at a connection whose idle (or head) deadline has passed while
        its transport still holds part of the last answer (a client on a slow link), or 0.0
        to end it. It is not idle while its client takes that answer (nginx starts
        keepalive_timeout once the answer is sent): cut then, the answer would end short, and
        one that ends with the connection would seem whole. From then on it is looked at as
        one that fills its socket is (`_taking`); one that took all of it is idle from now."""
        t = self.transport
        left = t.get_write_buffer_size() if t is not None else 0
        # (a holdup this idle deadline began: any later request moved the deadline past it)
        held = self.paused_at and self.deadline <= self.paused_at
        if left:
            if not held:  # the first look: the client holds it up from now
                self.paused_at = now
                self.sending = self.send_base = unsent(t)
                self.send_look = now + self.limits.send_timeout
                return self.send_look
            # (a timer armed for something else, a close's, looks no sooner)
            return self._taking(now) if now >= self.send_look else self.send_look
        if held:  # it took the rest since the last look (its holdup counts, as a pause's)
            self.held_s += now - self.paused_at
            self.held_taken = carried(self.held_s, self.held_taken + self.send_base,
                                      self.limits)
            self.paused_at = 0.0
            self.deadline = now + self.limits.keepalive_timeout
            return self.deadline
        return 0.0

    def _taking(self, now: float) -> float:
        """A look, every `send_timeout`, at a client holding up an answer (its transport's
        buffer full: `Flow.pause_writing`; or the rest of an answer held once the connection
        is idle: `_sending`): when to look again, or 0.0 to drop it. Dropped when it took
        nothing since the last look (nginx's `send_timeout`, "between two successive write
        operations": any progress resets it, where the buffer's fill alone cut a client
        reading steadily below about 48 KiB per `send_timeout`), or less than
        `body_min_rate` on average over the connection's holdups, this one and the earlier
        (`Flow.resume_writing`), after `send_timeout` of grace (`send_due`: a byte a look, a
        slow-read attack, held the connection and the answer's bytes for ever)."""
        left = unsent(self.transport)
        seen, self.sending = self.sending, left
        limits = self.limits
        rate = limits.body_min_rate
        taken = self.held_taken + self.send_base - left
        since = self.paused_at - self.held_s
        if (over := taken - carried(now - since, taken, limits)) > 0:  # (`carried`)
            self.held_taken -= over
            taken -= over
        if left < seen and not (rate and now >= send_due(since, taken, limits)):
            self.send_look = now + limits.send_timeout
            return self.send_look
        if left < seen:  # some progress, too slow
            took = now - since
            event(log, "answer_taken_too_slowly", remote=self.remote, bytes=taken,
                  seconds=round(took, 3), min_rate=rate)
        self.server.counted("send_timeout")
        return 0.0

    def _body_timeout(self, req: Request, whole: bool = False, slow: bool = False) -> None:
        timeout = self.limits.body_timeout
        self.stopped = True
        self.linger_end = -1.0  # (its end is no reason to read what it sends slower still)
        self.server.counted("body_min_rate" if slow else "body_incomplete" if whole
                            else "body_stalled")
        if slow:  # (once: the connection reads nothing more)
            rate = self.limits.body_min_rate
            took = self.loop.time() - self.rate_from
            event(log, "request_body_too_slow", remote=req.conn.remote, bytes=req.body_size,
                  seconds=round(took, 3), min_rate=rate)
            req.body_error = BodyTimeout(
                f"the request body arrived slower than {rate:g} bytes/s (server.body_min_rate, "
                f"after the first {timeout:g}s): {req.body_size} bytes in {took:.1f}s")
            req.keep_alive = False
            req.wake()
            return
        if req.dispatched:  # the proxy is reading it: it answers 408 (or aborts)
            req.body_error = BodyTimeout(f"the request body stalled for {timeout:g}s")
            req.keep_alive = False
            req.wake()
            return
        if whole:
            req.refused = (408, f"the request body did not arrive within {timeout:g}s "
                                f"(server.body_timeout: a body of up to {SMALL_BODY // 1024} "
                                f"KiB must arrive whole by then): {req.body_size} of "
                                f"{req.content_length} bytes came")
        else:
            req.refused = (408, f"the request body stalled for {timeout:g}s")
        self._dispatch()

    def _slow_body(self, req: Request) -> float | None:
        """(`spare`) A buffered body arriving slower than the pace that has it whole by its
        deadline, as for a head still arriving (nothing of it went on): that deadline.
        None for any other request in progress (one handed on, or on time). The pace runs
        from PACE_GRACE after its head (at most a quarter of `body_timeout`), to its
        deadline: a body whose first bytes are a round trip behind its head (a client that
        writes them apart) is on its way, not behind (it was, the moment after its head, and
        gave way at the cap before connections idle between requests)."""
        if req is not self.parsing or not buffering(req):
            return None
        timeout = self.limits.body_timeout
        grace = min(PACE_GRACE, timeout / 4)
        waited = self.loop.time() - (self.deadline - timeout) - grace
        if req.body_size * (timeout - grace) >= req.content_length * waited:  # type: ignore[operator]
            return None
        return self.deadline
