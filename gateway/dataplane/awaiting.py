"""The coroutine side of an exchange (`exchange.Exchange`, a base of it): send a request
whose body is streamed, with the backend's flow control, wait for the answer's head, read or
settle its body. Waits have no timer: the pool's deadline sweeper fails an exchange whose
`wait_until` has passed (it scans `waiting`), and the callbacks wake `waiter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from gateway.dataplane.clock import Clock
from gateway.errors import ClientTimeout, UpstreamClosed, UpstreamError, UpstreamTimeout

__all__ = ["Awaiting", "Body"]

Body = bytes | AsyncIterator[bytes] | None


class _Pool(Protocol):
    waiting: set[Any]  # (the exchanges waiting on a backend, which the sweeper scans)
    origins: tuple[bytes, ...]  # "scheme://host[:port]" of the backend (answerparsing)


class Awaiting:
    """The coroutines of an exchange; its state is the exchange's (declared here)."""

    # (what these coroutines write; the exchange's other state is in its own slots)
    __slots__ = ("_chunked_out", "buffered", "chunks", "read_paused", "unsent", "wait_until",
                 "waiter")

    loop: asyncio.AbstractEventLoop
    clock: Clock  # the data plane's shared clock reading
    pool: _Pool
    transport: asyncio.Transport | None
    closed: bool
    error: UpstreamError | None
    waiter: asyncio.Future[None] | None
    idle: float
    deadline: float
    wait_until: float
    headers_done: bool
    complete: bool
    chunks: list[bytes]
    buffered: int
    read_paused: bool
    unsent: bool
    _write_paused: bool
    _chunked_out: bool
    fail: Callable[[UpstreamError], None]  # (the exchange's: stop it with this error)

    async def _wait(self) -> None:
        # No timer per wait (a uvloop timer costs ~3 µs to arm and cancel, 5% of a
        # request): the pool's deadline sweeper checks `wait_until` every few ms.
        fut = self.loop.create_future()
        self.waiter = fut
        self.wait_until = min(self.loop.time() + self.idle, self.deadline)
        waiting = self.pool.waiting
        waiting.add(self)
        try:
            await fut
        finally:
            waiting.discard(self)
            self.waiter = None

    async def send(self, head: bytes, body: Body, chunked: bool = False,
                   wake: Callable[[], None] | None = None) -> None:
        """Write the request. A streamed body is sent chunked when `chunked`, else as is;
        `wake` wakes its iterator (which then yields b''), called when the backend answers,
        fails or closes while the body waits on the client (`_send_body`)."""
        self._chunked_out = chunked
        tr = self.transport
        if tr is None or self.closed:
            raise UpstreamClosed("connection closed before sending")
        if body is None or isinstance(body, bytes):
            tr.write(head + body if body else head)
            return
        tr.write(head)
        self.unsent = True
        try:
            # The route's total deadline holds while the client's body is awaited too (the
            # sweeper sees only waits on the backend): a client that sends a byte now and
            # then must not hold a backend connection past it (R-U-D-Y). One timer per
            # streamed body; `ClientTimeout` when it passes.
            async with asyncio.timeout_at(self.deadline):
                await self._send_body(tr, body, wake)
        except TimeoutError:
            self.clock.now = self.loop.time()  # (a timer ended the wait: upstream._sweep)
            err: UpstreamError
            if self._write_paused:  # (waiting for the backend to take the body: its delay)
                err = UpstreamTimeout("total", delivered=True)
            else:
                err = ClientTimeout("the request body did not arrive within the route's "
                                    "total timeout")
            self.fail(err)  # (the connection closes: the request went out in part)
            raise err from None

    async def _send_body(self, tr: asyncio.Transport, body: AsyncIterator[bytes],
                         wake: Callable[[], None] | None) -> None:
        # While the next piece of the body is awaited from the client, `waiter` holds a
        # future that `wake`s the body's iterator when the backend answers, fails or closes
        # (a kill too): without it, such an event was only seen when the client sent more,
        # and a client whose upload had stalled got 408 after body_timeout instead of the
        # backend's early answer (a 413, a 401) or a 502.
        pieces = body.__aiter__()
        while True:
            # (what came while the send was not waiting on the client, as the backend took
            # the body again and answered in the same turn of the loop: no guard would hear
            # it, it came already)
            if self.error is not None:
                raise self.error
            if self.headers_done:
                return
            guard = None
            if wake is not None and self.waiter is None:
                guard = self.waiter = self.loop.create_future()
                guard.add_done_callback(lambda _: wake())
            try:
                chunk = await pieces.__anext__()
            except StopAsyncIteration:
                break
            finally:
                if guard is not None and self.waiter is guard:
                    self.waiter = None
            if self.error is not None:
                raise self.error
            if self.headers_done:
                return  # the backend answered early: stop sending (and never reuse this)
            if chunk:
                tr.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self._chunked_out else chunk)
            while self._write_paused:  # the backend is slow to take the body: its deadlines
                if self.error is not None:
                    raise self.error
                if self.closed:
                    raise UpstreamClosed("backend closed while receiving the body")
                if self.headers_done:
                    return
                await self._wait()
        if self._chunked_out and not self.headers_done:
            tr.write(b"0\r\n\r\n")
        self.unsent = self.headers_done and self._chunked_out

    async def read_head(self) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def read(self) -> bytes:
        """Next body bytes; b'' at the end. Raises UpstreamError when the body is cut (a
        kill at once: before bytes already buffered, or an end already read)."""
        while True:
            err = self.error
            if err is not None and err.cuts:
                raise err
            if self.chunks:
                chunks = self.chunks
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.buffered = 0
                if self.read_paused and self.transport:
                    self.read_paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait()

    async def settle(self, limit: int) -> None:
        """Wait until the whole body has arrived or more than `limit` bytes of it, reading
        nothing out (a small answer must be seen whole before it is judged)."""
        while True:
            err = self.error
            if err is not None and (err.cuts or not (self.complete or self.buffered > limit)):
                raise err
            if self.complete or self.buffered > limit:
                return
            await self._wait()

    def peek_body(self) -> bytes:
        """The body received so far, left in place."""
        chunks = self.chunks
        if len(chunks) > 1:
            self.chunks = chunks = [b"".join(chunks)]
        return chunks[0] if chunks else b""
