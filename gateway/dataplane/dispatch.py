"""The request queue of a data-plane connection, in order: each request handed to the
proxy when it is ready (its head and small body in, or its body streaming), a refused one
answered and the connection closed, bytes that are not a request turned into a refusal, and
the next request handed on once an answer is written (or the connection closed, or kept
alive under `keepalive_timeout`). A base of `protocol.HttpProtocol`, which owns the
connection and the state these read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from gateway.dataplane.clock import Clock
from gateway.dataplane.request import BadBody, Request
from gateway.dataplane.wire import SMALL_BODY, Handler, Limits, Server, error_response

__all__ = ["Dispatching"]

log = logging.getLogger("killgate.protocol")


class Dispatching:
    """Handing `HttpProtocol`'s requests on (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    server: Server
    handler: Handler
    limits: Limits
    clock: Clock
    loop: asyncio.AbstractEventLoop
    queue: deque[Request]
    parsing: Request | None
    dispatching: bool
    write_paused: bool
    read_paused: bool
    closing: bool
    closed: bool
    stopped: bool
    deadline: float
    timer: asyncio.TimerHandle | None
    timer_at: float
    _arm: Callable[[float], None]
    _resume: Callable[[], None]
    write: Callable[[bytes], None]
    close: Callable[[], None]
    abort: Callable[[], None]

    def _dispatch(self) -> None:
        """Hand the request at the head of the queue to the proxy when it is ready: its head
        and its small body are in, or it streams its body (large, chunked, or 100-continue).
        Iterative: an answer given synchronously hands over the next one in this loop."""
        if self.dispatching:
            return
        self.dispatching = True
        queue = self.queue  # (connection_lost replaces it, and sets `closed`)
        try:
            while queue and not self.closed:
                req = queue[0]
                if req.dispatched or self.write_paused:
                    return  # (a client reading none of its answers gets no more of them)
                if req.refused is not None:
                    self._refuse(req)
                    return
                if not req.body_done:
                    cl = req.content_length
                    if not (req.chunked or req.expect_continue
                            or (cl is not None and cl > SMALL_BODY)):
                        self._arm(req.last_body + self.limits.body_timeout)
                        return  # a small body still on its way: the fast path waits for it
                req.dispatched = True
                try:
                    self.handler.handle(req)
                except Exception:  # a bug of ours: this request fails, never the connection loop
                    log.exception("request_failed")
                    self.server.counted("internal_error")
                    if self.queue and req is self.queue[0] and not req.responded:
                        req.keep_alive = False
                        req.respond(error_response(500, "the gateway failed on this request",
                                                   req.method))
                    else:
                        self.abort()
                    return
        finally:
            self.dispatching = False

    def _refuse(self, req: Request) -> None:
        status, message = req.refused or (400, "bad request")
        self.server.counted("malformed")
        self.queue.popleft()
        self.write(error_response(status, message, req.method))
        self.close()

    def _malformed(self, status: int, message: str, method: bytes = b"") -> None:
        """Bytes that are not a request we accept: refuse in turn, parse nothing more
        (`method`: the request's, when its method was read: a HEAD is answered so)."""
        self.stopped = True
        req = self.parsing
        if req is not None and req in self.queue:  # its body was malformed
            if req.dispatched:
                req.body_error = BadBody(message)
                req.wake()
                self.closing = True
                return
            self.queue.remove(req)
        if self.closing or (self.queue and not self.queue[-1].keep_alive):
            return  # bytes after the last answer this connection gives (`Connection: close`)
        bad = Request().begin(self, self.loop.time())
        bad.refused = (status, message)
        bad.method = method
        bad.keep_alive = False
        self.queue.append(bad)
        self._dispatch()

    def finished(self, req: Request) -> None:
        """`req`'s answer is written: the next request may go (or the connection closes)."""
        queue = self.queue
        if not queue or queue[0] is not req:
            return  # the connection went first
        queue.popleft()
        self.handler.done(req)
        if not req.keep_alive or not req.body_done or self.closing or self.server.draining:
            self.close()
            return
        if not queue:
            if self.parsing is None:
                self.deadline = deadline = self.clock.now + self.limits.keepalive_timeout
            else:
                deadline = self.deadline  # (of a head begun meanwhile)
            if self.timer is None or deadline < self.timer_at:
                self._arm(deadline)
            if self.read_paused:
                self._resume()
            return
        if self.read_paused and len(queue) <= 1:
            self._resume()
        if not self.dispatching:
            self._dispatch()
