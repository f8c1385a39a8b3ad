"""The data-plane listener: the listening socket, its connections, the cap and the drain.

Owns what spans connections (RELIABILITY rows 37-39): the open-connection caps (at
`server.max_connections` the connections closest to their deadline with no request in
progress are closed to make room, ROOM_BATCH at a time, as nginx reuses its idle keep-alive
connections; only when every connection has a request in progress is a new one closed as
soon as it is accepted; so is one from an address that holds
`server.max_connections_per_client` already: `peercap.py`), the
connection deadlines every connection applies (`Limits`), the counters connections report,
and the graceful drain on SIGTERM: stop accepting, close idle connections at once, let each
busy one finish the answer in progress and close, abort what is left after the timeout.

One protocol serves today: HTTP/1.1 (`dataplane/protocol.py`). The registry, limits and
drain are the protocol's `Server` interface, so an HTTP/2 protocol (h2, for gRPC
pass-through) can sit beside it, chosen per connection, and feed the same proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import socket
import time
from collections.abc import Callable

from gateway.dataplane.clock import Clock
from gateway.dataplane.peercap import PeerCap
from gateway.dataplane.protocol import Handler, HttpProtocol, Limits
from gateway.dataplane.wire import Drainable

__all__ = ["DEADLINE_SHARE", "Limits", "Listener"]

DEADLINE_SHARE = 0.25  # of drain_timeout (at most 1 s): for the answers cut at its end
#: connections closed at once to make room at the cap (a scan of every connection, so a
#: batch: a flood of new connections pays one scan per ROOM_BATCH of them, as nginx's 32)
ROOM_BATCH = 32
#: after a scan that found every connection busy, new ones are refused without a scan for
#: this long (a flood must not buy a scan of the whole set per connection)
ROOM_RESCAN = 0.1
#: of the connections, how many a scan keeps as candidates to close next (`_scan`)
ROOM_SHARE = 1 / 8


class Listener:
    """Accepts data-plane connections and holds them until they close."""

    def __init__(self, handler: Handler, limits: Limits, max_connections: int,
                 count: Callable[[str], None] = lambda _: None,
                 clock: Clock | None = None, max_per_client: int = 0) -> None:
        self.handler = handler
        self.clock = clock or Clock()
        self.limits = limits
        self.max_connections = max_connections
        self.per_client = PeerCap(max_per_client) if max_per_client else None
        # chosen once: with the per-client cap off, a connection's end checks nothing for it
        self.forget: Callable[[Drainable], None] = (
            self._forget if self.per_client is None else self._forget_counted)
        self.connections: set[Drainable] = set()
        #: closed to make room, their `connection_lost` still to come (not counted)
        self.leaving: set[Drainable] = set()
        self._busy_until = 0.0  # no room was found: refuse without a scan until then
        self._room: list[Drainable] = []  # the last scan's candidates, the soonest last
        self.draining = False
        self.winding_down = False
        self._count = count
        self._server: asyncio.AbstractServer | None = None
        self._empty: asyncio.Event | None = None
        self.hurried = False  # a second Ctrl-C: the drain stops waiting (hurry)

    def counted(self, what: str) -> None:
        self._count(what)

    def full(self) -> bool:
        """At `max_connections` (those closing to make room not counted) with no room made:
        a new connection is refused. Otherwise the ROOM_BATCH connections with no request
        in progress (`Drainable.spare`) closest to their deadline are closed: an idle
        connection (held open by anyone, sending nothing) must not lock clients out."""
        if len(self.connections) - len(self.leaving) < self.max_connections:
            return False
        now = time.monotonic()
        if now < self._busy_until:
            return True
        batch = max(1, min(ROOM_BATCH, self.max_connections // 64))
        if not self._make_room(batch):
            self._scan(batch)
            if not self._make_room(batch):
                self._busy_until = now + ROOM_RESCAN
                return True
        return False

    def _scan(self, batch: int) -> None:
        """The connections with no request in progress, soonest deadline last: the next
        ROOM_SHARE of them (at least a batch) are kept as the candidates, so that a flood
        of new connections at the cap pays one scan of every connection per ROOM_SHARE of
        the cap, not per batch (each candidate is asked again when its turn comes)."""
        spare = []
        leaving = self.leaving
        for conn in self.connections:
            if conn not in leaving:
                key = conn.spare()
                if key is not None:
                    spare.append((key, conn))
        keep = max(batch, int(len(self.connections) * ROOM_SHARE))
        chosen = heapq.nsmallest(keep, spare, key=lambda kc: kc[0])
        self._room = [conn for _, conn in reversed(chosen)]

    def _make_room(self, batch: int) -> int:
        """Close up to `batch` of the candidates of the last scan that still have no
        request in progress; how many were closed."""
        room, made = self._room, 0
        while room and made < batch:
            conn = room.pop()
            if conn in self.connections and conn not in self.leaving \
                    and conn.spare() is not None:
                self.leaving.add(conn)
                conn.abort()
                self._count("reclaimed")
                made += 1
        return made

    def _forget(self, conn: Drainable) -> None:
        """`conn` has closed (every way a connection ends: closed, aborted, timed out,
        drained goes through its `connection_lost`, once)."""
        self.connections.discard(conn)
        if self.leaving:
            self.leaving.discard(conn)
        if self._room and len(self.connections) < self.max_connections // 2:
            self._room = []  # (far from the cap: the candidates' objects are not kept)
        if not self.connections and self._empty is not None:
            self._empty.set()

    def _forget_counted(self, conn: Drainable) -> None:
        """`_forget`, and the slot of `conn`'s address given back (once: it was admitted,
        so it was counted, and it is in `connections` until this)."""
        cap = self.per_client
        if cap is not None and conn in self.connections:
            cap.release(conn.remote or "")
        self._forget(conn)

    async def start(self, sock: socket.socket, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpProtocol(self, loop), sock=sock,
                                                backlog=backlog)

    def wind_down(self) -> None:
        """Shutting down soon (`server.shutdown_delay`): still accepting and serving, but
        each answer from now on closes its connection (`Connection: close`), so that
        clients holding kept-alive connections (to this address, or pinned to it by a
        Service's connection tracking) open new ones, which reach instances that stay."""
        self.winding_down = True

    def hurry(self) -> None:
        """Stop waiting for the answers in progress: a drain under way (or to come) aborts
        what is still open at once."""
        self.hurried = True
        if self._empty is not None:
            self._empty.set()

    async def shutdown(self, timeout: float,
                       at_deadline: Callable[[], object] | None = None) -> bool:
        """Stop accepting, let answers in progress finish (at most `timeout`), close all.
        `at_deadline` ends what it can as its clients can tell (the last DEADLINE_SHARE
        of `timeout`, at most a second, lets it be written) before the rest is aborted.
        True when every connection closed on its own."""
        self.draining = self.winding_down = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        clean = True
        if self.connections and not self.hurried:
            self._empty = asyncio.Event()
            last = min(1.0, timeout * DEADLINE_SHARE) if at_deadline is not None else 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout - last)
            clean = not self.connections
            if not clean and at_deadline is not None:
                at_deadline()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._empty.wait(), last)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for _ in range(3):  # let aborted connections run connection_lost
            await asyncio.sleep(0)
        return clean
