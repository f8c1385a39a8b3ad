"""How a data-plane connection ends: closed, aborted, or closed with a linger.

A base of `protocol.HttpProtocol`, which owns the connection and the state these read. When
the gateway ends a connection while the client may still be sending (an answer given before
its request's body was read: 413 over the size limit, 404, a refusal), closing at once
would leave the client's bytes unread, and the kernel answers unread bytes with a reset that
destroys our answer at the client before it reads it (a client such as `http.client`, under
`requests`, sends its whole body first, then reads). So the connection lingers, as nginx's
`lingering_close` does: our side ends once the answer is sent (a FIN), and what the client
still sends is read and dropped until it ends its side, nothing comes for
`Limits.linger_timeout`, or `Limits.linger_time` has passed. A client too slow for the body
deadline gets no linger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.dataplane.request import Request
from gateway.dataplane.wire import Limits

__all__ = ["Closing"]


class Closing:
    """close, abort and the linger (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    loop: asyncio.AbstractEventLoop
    limits: Limits
    transport: asyncio.Transport | None
    parsing: Request | None
    timer: asyncio.TimerHandle | None
    timer_at: float
    closing: bool
    closed: bool
    stopped: bool
    read_paused: bool
    held: bytes
    lingering: bool
    linger_end: float  # < 0: this connection never lingers (its client was too slow)
    linger_heard: bool
    _arm: Callable[[float], None]

    def close(self) -> None:
        """Close once what was written is sent; linger while the client may be sending."""
        self.closing = True
        self.stopped = True
        t = self.transport
        if t is not None and not self.closed:
            # (a request is arriving; an aborted transport has nothing left to linger for,
            # and uvloop's `write_eof` raises once its handle is closed)
            if self.parsing is not None and self.linger_end >= 0 and not t.is_closing():
                self._linger(t)
            else:
                t.close()
                if t.get_write_buffer_size():
                    # the close waits for the answer to be taken: a client that stops
                    # reading it must meet a deadline (`_tick`), even when none is left
                    self._arm(self.loop.time() + self.limits.send_timeout)

    def abort(self) -> None:
        if self.transport is not None and (not self.closed or self.lingering):
            self.transport.abort()

    def _linger(self, t: asyncio.Transport) -> None:
        """RFC 9112 §9.6. The connection is done with (`closed`: nothing more is written or
        handed on) but still counted until it ends."""
        self.closed = True
        self.lingering = True
        self.held = b""
        t.write_eof()
        if self.read_paused:
            self.read_paused = False
            t.resume_reading()
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = 0.0  # (`_arm` never replaces the linger timer)
        now = self.loop.time()
        self.linger_end = now + self.limits.linger_time
        self.linger_heard = False
        self.timer = self.loop.call_at(min(now + self.limits.linger_timeout, self.linger_end),
                                       self._lingered)

    def _lingered(self) -> None:
        self.timer = None
        t = self.transport
        if t is None:
            return
        now = self.loop.time()
        # (closing: the client ended its side, and the transport's close waits for our
        # answer to be taken, with no deadline of ours left: `_tick` sees `closed`)
        closing = t.is_closing()
        if closing or not self.linger_heard or now >= self.linger_end:
            if t.get_write_buffer_size():
                t.abort()  # a client that takes neither our answer nor our end
            elif not closing:
                t.close()  # (a reset if its bytes are still unread: our answer was sent)
            return
        self.linger_heard = False
        self.timer = self.loop.call_at(min(now + self.limits.linger_timeout, self.linger_end),
                                       self._lingered)
