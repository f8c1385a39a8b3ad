"""A data-plane connection under the listener's drain (and its connection cap): what it can
spare (`spare`: by when it would be idle, or None while it carries an answer) and its
graceful end (`shutdown`). A base of `protocol.HttpProtocol`, which owns the connection and
the state these read.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from gateway.dataplane.request import Request

__all__ = ["DRAIN_FRESH_GRACE", "Draining"]

#: seconds a connection that has sent nothing yet gets, once the drain begins, to begin its
#: request (Go's http.Server.Shutdown spares such connections for 5 s): its client connected
#: before the listener closed and its bytes may be on the way
DRAIN_FRESH_GRACE = 1.0


class Draining:
    """spare and shutdown (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    queue: deque[Request]
    parsing: Request | None
    in_head: bool
    held: bytes
    read_paused: bool
    closed: bool
    closing: bool
    lingering: bool
    linger_end: float
    seen: int
    deadline: float
    _arm: Callable[[float], None]
    _slow_body: Callable[[Request], float | None]
    close: Callable[[], None]

    def spare(self) -> float | None:
        """(`Drainable.spare`) by deadline: the next head's (`keepalive_timeout` after the
        last answer), the head's in progress, or a small body's trickling in slower than
        its deadline needs (`Deadlines._slow_body`). Not while the transport still holds
        part of the last answer (a client on a slow link: `_sending`): an abort drops it,
        and an answer ended by the close would seem whole. Not while lingering (RFC 9112
        §9.6): a reset while the client still sends can cost it the answer it has not read
        yet (a 413, a 400); lingering ends on its own within seconds."""
        t = self.transport
        if (t is not None and t.get_write_buffer_size()) or self.lingering:
            return None
        if self.held or self.read_paused:  # pipelined requests read (or left unread while
            return None  # requests queued), to be parsed now that the answers caught up
        if self.closed or self.closing or len(self.queue) > 1:
            return None
        if self.queue:
            return self._slow_body(self.queue[0])
        if self.parsing is not None and not self.in_head:
            return None
        return self.deadline

    def shutdown(self) -> None:
        """Graceful drain: the answer in progress finishes (`Connection: close`), then the
        connection closes. A request partly received (its head half read) is in progress
        too: closed under it, its client saw its connection end with no answer. A
        connection that has carried no request yet was opened to send one, which may be
        on the way: it gets `DRAIN_FRESH_GRACE` to begin it. Only a kept-alive connection
        idle between requests closes at once (no answer to protect, so no linger)."""
        if self.queue or self.parsing is not None:
            self.closing = True
            return
        if not self.seen and not self.closing:
            when = self.loop.time() + DRAIN_FRESH_GRACE
            if when < self.deadline:
                self.deadline = when
                self._arm(when)
            return  # (its request, if it comes, is the last: `on_message_begin`)
        self.closing = True
        self.linger_end = -1.0
        self.close()
