"""The admin listener's send deadline: a client that takes nothing of its answer is cut off.

Owns `SendGuarded`, the aiohttp `RequestHandler` that admin/listener.py's protocol builds
on: while writes are paused, a look every `send_timeout` gives a client that took some of
its answer another one and aborts one that took nothing; after one `send_timeout` of grace
its holdups must average `send_min_rate` bytes a second (a slow-read attack held the
connection and its answers). Relies on aiohttp's `_loop` and `pause_writing` (pinned with
the listener's other internals).
"""

from __future__ import annotations

import asyncio

from aiohttp.web_protocol import RequestHandler

from gateway.admin.listenerlimits import Limits
from gateway.sockets import unsent

__all__ = ["SendGuarded"]


class SendGuarded(RequestHandler):
    __slots__ = ("_kg_base", "_kg_buffered", "_kg_held_s", "_kg_held_taken", "_kg_limits",
                 "_kg_send", "_kg_since")
    _kg_limits: Limits  # (set by the server that builds it, before the connection)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._kg_send: asyncio.Handle | None = None
        self._kg_buffered = 0  # bytes unsent at the last look, writes paused
        self._kg_since = 0.0  # the first look of that holdup, and what was unsent then
        self._kg_base = 0
        self._kg_held_s = 0.0  # the client's earlier holdups, in seconds (`_kg_unread`)
        self._kg_held_taken = 0  # and what it took of our answers in them

    def pause_writing(self) -> None:
        # the client takes nothing: its answer waits (and holds this connection, in
        # progress) unless a deadline ends it. Progress is measured from what the
        # handler's step that filled the buffer leaves (it may write more before it waits
        # on the drain): the first look is on the next loop turn
        super().pause_writing()
        self._kg_buffered = 1 << 62
        self._kg_send = self._loop.call_soon(self._kg_unread)

    def resume_writing(self) -> None:
        if self._kg_send is not None:
            self._kg_send.cancel()
            self._kg_send = None
        if self._kg_buffered != 1 << 62:  # a holdup looked at: it counts in the next one's
            self._kg_held_s += self._loop.time() - self._kg_since
            self._kg_held_taken = self._kg_carried(self._kg_held_s, self._kg_held_taken + max(
                0, self._kg_base - unsent(self.transport)))
            self._kg_buffered = 1 << 62
        super().resume_writing()

    def _kg_carried(self, held_s: float, taken: int) -> int:
        """`taken` (what the client took in `held_s` s of holdups) as counted towards the
        rate: at most one `send_timeout` ahead of `send_min_rate` (each byte above it
        bought time without limit: a fast start banked minutes of slow reading after;
        dataplane/deadlines.carried's rule)."""
        rate, grace = self._kg_limits.send_min_rate, self._kg_limits.send_timeout
        return min(taken, int((held_s + grace) * rate)) if rate else taken

    def _kg_unread(self) -> None:
        """A look at a client its answer waits for: one that took some of it since the last
        look (the transport's buffer and the socket's queue: a console on a slow link) is
        given another `send_timeout`, as nginx's is between two reads; one that took nothing
        is cut off. (Cut at the first look, one reading steadily but slower than the
        buffer's high-to-low water mark per `send_timeout`, ~800 B/s, was cut.) Its rate is
        judged over all the connection's holdups, with one grace (`send_min_rate`): judged
        per pause, a client taking the ~48 KiB that end one a little faster than a fresh
        grace allowed, again and again, held its answers at half the rate for ever."""
        self._kg_send = None
        if self.transport is None:
            return
        limits, now = self._kg_limits, self._loop.time()
        if (left := unsent(self.transport)) < self._kg_buffered:
            if self._kg_buffered == 1 << 62:  # the first look
                self._kg_since, self._kg_base = now, left
            rate = limits.send_min_rate
            # (and on average at least `send_min_rate` once `send_timeout` has passed: a
            # few bytes a look, a slow-read attack, held the connection and its answers)
            taken = self._kg_held_taken + self._kg_base - left
            if (over := taken - self._kg_carried(now - self._kg_since + self._kg_held_s,
                                                 taken)) > 0:
                self._kg_held_taken -= over
                taken -= over
            if not rate or now < (self._kg_since - self._kg_held_s + limits.send_timeout
                                  + taken / rate):
                self._kg_buffered = left
                self._kg_send = self._loop.call_later(limits.send_timeout, self._kg_unread)
                return
        limits.on_refused("timeout")
        self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._kg_send is not None:
            self._kg_send.cancel()
            self._kg_send = None
        super().connection_lost(exc)
