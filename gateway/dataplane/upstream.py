"""HTTP/1.1 client to the model backends: keep-alive pools, streaming, deadlines.

Owns every socket to a backend. Built on asyncio protocols and httptools (llhttp, strict
mode) instead of aiohttp's client: a proxy needs a sliver of that client's features and
its per-request machinery dominated the gateway's CPU profile (benchmarks/RESULTS.md).
Invariants: a connection goes back to its pool only after a complete, keep-alive
response; anything else closes it. An exchange is driven one of two ways: a coroutine awaits
it (`read_head`, `read`), or a `Sink` is told of every step from the protocol callbacks (the
proxy's fast path, with no Task: the answer goes from here to the client transport). Socket
and parser errors leave this module only as gateway.errors.Upstream* (with `delivered`
telling whether a request byte was sent).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import httptools

from gateway.dataplane.clock import Clock
from gateway.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamQueueTimeout,
    UpstreamTimeout,
)

__all__ = ["Exchange", "Pool", "Sink", "Upstreams"]

HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024

Body = bytes | AsyncIterator[bytes] | None


class _BadAnswer(Exception):
    """An answer the parser took that HTTP/1.1 does not have (its message is the reason)."""


class _Extra(Exception):
    """Another message after the exchange's answer, or on an idle connection."""


_OTHER, _LENGTH, _CODING = 0, 1, 2
_FRAMING: dict[bytes, int] = {}  # a field name as a backend spells it -> what it frames


def _framing(name: bytes) -> int:
    """Whether an answer's field frames its body (learned once per spelling, bounded)."""
    low = name.lower()
    kind = _LENGTH if low == b"content-length" else (
        _CODING if low == b"transfer-encoding" else _OTHER)
    if len(_FRAMING) >= 1024:
        _FRAMING.clear()
    _FRAMING[name] = kind
    return kind


class Sink(Protocol):
    def upstream(self, ex: Exchange) -> None:
        """The exchange moved on: its head, body bytes, its end, or an error arrived."""


class Exchange(asyncio.Protocol):
    """One pooled connection; carries one request/response exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.sink: Sink | None = None
        self.feeding = False
        self.woke = False
        self.pool = pool
        self.loop = pool.loop
        self.clock = pool.clock
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._write_paused = False
        self._chunked_out = False
        self.uses = 0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None  # the answer's Content-Length
        self.head_at = 0.0  # when the answer's head arrived (loop clock)
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.got_bytes = False
        self.keep_alive = False
        self.head = False
        self.unsent = False  # a request body not sent whole (the backend answered first)
        self._framed = False
        self.deadline = 0.0
        self.idle = 0.0
        self.wait_until = 0.0

    # ------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.clock.now = now = self.loop.time()
        sink = self.sink
        if sink is not None:  # no waits to stamp: the idle deadline moves on here
            self.wait_until = min(now + self.idle, self.deadline)
            self.feeding = True  # the sink hears once, after these bytes (head, body, end)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamProtocolError("backend switched protocols; upgrades are not proxied"))
        except httptools.HttpParserError as exc:
            if self.complete:
                # Bytes after a complete answer (a 204's "body", a second answer, anything
                # on an idle pooled connection): the answer stands, the bytes are never
                # read as part of it or of the next one, and the connection is not reused.
                self.keep_alive = False
                if self.transport is not None:
                    self.transport.abort()
            else:
                cause = exc.__context__
                self.fail(UpstreamProtocolError(
                    str(cause) if isinstance(cause, _BadAnswer)
                    else f"malformed response from backend: {exc}"))
        finally:
            if sink is not None:
                self.feeding = False
                if self.woke:
                    self.woke = False
                    if self.sink is not None:
                        self.sink.upstream(self)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self._framed and not self.error:
            # Body delimited by connection close (no length, not chunked): EOF ends it.
            self.complete = True
            self.keep_alive = False
        elif not self.complete and self.error is None:
            self.error = UpstreamClosed("backend closed the connection"
                                        + (" mid-response" if self.headers_done else ""))
        self._wake()
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)  # (a send waiting for the backend to take the body)

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.headers_done:
            raise _Extra  # (a 1xx is followed by its final answer: that one is welcome)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        kind = _FRAMING.get(name)
        if kind is None:
            kind = _framing(name)
        if kind:
            if kind == _LENGTH:
                self._framed = True
                if value.isdigit():
                    self.length = int(value)
            elif b"chunked" in value.lower():
                self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            raise _BadAnswer(f"the backend answered status {status:03d}, which HTTP does not have")
        if self.parser.get_http_version() not in ("1.1", "1.0"):
            raise _BadAnswer(f"the backend answered in HTTP/{self.parser.get_http_version()}")
        if status < 200:
            return  # informational: the real head follows
        self.status = status
        self.headers_done = True
        self.head_at = self.clock.now
        self.keep_alive = self.parser.should_keep_alive()
        if status in (204, 304) or self.head:
            self._framed = True
        if self.head:
            # llhttp cannot be told a HEAD response has no body: end here, never reuse.
            self.complete = True
            self.keep_alive = False
        if self.feeding and self.waiter is None:
            self.woke = True  # (`_wake`, inline: the sink hears once these bytes are parsed)
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused and self.transport:
            self.read_paused = True
            self.transport.pause_reading()
        if self.feeding and self.waiter is None:
            self.woke = True
        else:
            self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of a 1xx: none of its fields are the answer's
            self.headers = []
            self.length = None
            self._framed = False
            return
        self.complete = True
        if self.feeding and self.waiter is None:
            self.woke = True
        else:
            self._wake()

    # ------------------------------------------------------------ internals

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            if not w.done():
                w.set_result(None)
        elif self.sink is not None:
            if self.feeding:
                self.woke = True
            else:
                self.sink.upstream(self)

    def fail(self, exc: UpstreamError) -> None:
        """Stop this exchange with `exc` (also used to abort it from outside: kills)."""
        if self.error is None:
            self.error = exc
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _on_timer(self) -> None:
        phase = "total" if self.loop.time() >= self.deadline - 0.001 else "idle"
        self.fail(UpstreamTimeout(phase, delivered=True))

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

    # ------------------------------------------------------------ API

    def begin(self, deadline: float, idle: float, head: bool) -> None:
        self.uses += 1
        self.deadline = deadline
        self.idle = idle
        self.head = head

    def drive(self, sink: Sink, data: bytes) -> None:
        """Send a whole request and tell `sink` of every step of the answer (no coroutine):
        the deadline sweeper watches it meanwhile."""
        self.sink = sink
        until = self.clock.now + self.idle
        deadline = self.deadline
        self.wait_until = until if until < deadline else deadline
        self.pool.waiting.add(self)
        tr = self.transport
        if tr is None or self.closed:
            self.fail(UpstreamClosed("connection closed before sending"))
            return
        tr.write(data)

    def begin_drive(self, sink: Sink, data: bytes, deadline: float, idle: float,
                    head: bool) -> None:
        """`begin` and `drive` in one call (the fast path's: one call less per request)."""
        self.uses += 1
        self.deadline = deadline
        self.idle = idle
        self.head = head
        self.sink = sink
        until = self.clock.now + idle
        self.wait_until = until if until < deadline else deadline
        self.pool.waiting.add(self)
        tr = self.transport
        if tr is None or self.closed:
            self.fail(UpstreamClosed("connection closed before sending"))
            return
        tr.write(data)

    def detach(self) -> None:
        """No sink any more: a coroutine takes over (streaming), or the exchange is done."""
        self.sink = None
        self.pool.waiting.discard(self)

    async def send(self, head: bytes, body: Body, chunked: bool = False) -> None:
        """Write the request. A streamed body is sent chunked when `chunked`, else as is."""
        self._chunked_out = chunked
        tr = self.transport
        if tr is None or self.closed:
            raise UpstreamClosed("connection closed before sending")
        if body is None or isinstance(body, bytes):
            tr.write(head + body if body else head)
            return
        tr.write(head)
        self.unsent = True
        async for chunk in body:
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
        """Next body bytes; b'' at the end. Raises UpstreamError when the body is cut."""
        while True:
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
        while not self.complete and self.buffered <= limit:
            if self.error is not None:
                raise self.error
            await self._wait()

    def peek_body(self) -> bytes:
        """The body received so far, left in place."""
        chunks = self.chunks
        if len(chunks) > 1:
            self.chunks = chunks = [b"".join(chunks)]
        return chunks[0] if chunks else b""

    def take_body(self) -> bytes:
        """The whole body when it has already arrived (complete and small)."""
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        """Hand the connection back: pooled if reusable, else closed."""
        self.pool.release(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(self, scheme: str, host: str, port: int, max_conns: int,
                 loop: asyncio.AbstractEventLoop, waiting: set[Exchange],
                 max_pending: int, clock: Clock | None = None) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.loop = loop
        self.clock = clock or Clock()
        self.waiting = waiting  # shared by every pool; the Upstreams sweeper scans it
        self.max_conns = max_conns
        self.max_pending = max_pending
        self.idle: list[Exchange] = []
        self.open = 0
        self._waiters: deque[asyncio.Future[Exchange | None]] = deque()
        self.host_header = (host if port in (80, 443) else f"{host}:{port}").encode("idna")
        if ":" in host:
            self.host_header = f"[{host}]:{port}".encode()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if scheme == "https" else None
        self.retired = False

    async def acquire(self, connect_timeout: float, new: bool = False) -> tuple[Exchange, bool]:
        """A pooled exchange (reused: True) or a new connection (`new`: unless the pool is
        full, after a pooled one turned out closed). When every connection is busy the
        request waits, first come first served, at most `connect_timeout` in all; a
        released connection is handed straight to the oldest waiter."""
        deadline = 0.0
        queued = False
        while True:
            idle = self.idle if not new or self.open >= self.max_conns else []
            while idle:
                ex = idle.pop()
                if not ex.closed and ex.keep_alive:
                    ex._reset()
                    return ex, True
            if self.open < self.max_conns:
                break
            if not queued:
                if len(self._waiters) >= self.max_pending:
                    raise UpstreamOverflow(f"{self.host}:{self.port} has {self.open} busy "
                                           f"connections and {len(self._waiters)} requests "
                                           f"waiting")
                deadline = self.loop.time() + connect_timeout
            left = deadline - self.loop.time()
            if left <= 0:
                raise self._queue_timeout(connect_timeout)
            fut: asyncio.Future[Exchange | None] = self.loop.create_future()
            if queued:
                self._waiters.appendleft(fut)  # woken, but the slot went: keep its turn
            else:
                self._waiters.append(fut)
            queued = True
            try:
                handed = await asyncio.wait_for(fut, left)
            except TimeoutError:
                raise self._queue_timeout(connect_timeout) from None
            except BaseException:
                # cancelled after being served: pass what it was given on
                if fut.done() and not fut.cancelled():
                    given = fut.result()
                    if given is not None:
                        self.release(given)
                    else:
                        self._wake_one()
                raise
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
            if handed is not None and not handed.closed and handed.keep_alive:
                handed._reset()
                return handed, True
        self.open += 1
        try:
            _, ex = await asyncio.wait_for(
                self.loop.create_connection(lambda: Exchange(self), self.host, self.port,
                                            ssl=self._ssl),
                connect_timeout)
        except TimeoutError:
            self.open -= 1
            self._wake_one()
            raise UpstreamTimeout("connect", delivered=False) from None
        except (OSError, ssl.SSLError) as exc:
            self.open -= 1
            self._wake_one()
            raise UpstreamConnectError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        return ex, False

    def take_idle(self) -> Exchange | None:
        """A pooled connection at once, or None (the fast path never waits)."""
        idle = self.idle
        while idle:
            ex = idle.pop()
            if not ex.closed and ex.keep_alive:  # (aborted while idle: not closed yet)
                ex._reset()
                return ex
        return None

    def release(self, ex: Exchange) -> None:
        if ex.sink is not None:
            ex.detach()
        if ex.complete and ex.keep_alive and ex.error is None and not ex.closed \
                and not self.retired and not ex.chunks and not ex.unsent:
            while self._waiters:  # the oldest waiter gets it, not whoever comes next
                w = self._waiters.popleft()
                if not w.done():
                    w.set_result(ex)
                    return
            self.idle.append(ex)
        else:
            ex.close()

    def _lost(self, ex: Exchange) -> None:
        self.open -= 1
        if ex in self.idle:
            self.idle.remove(ex)
        self._wake_one()

    def _queue_timeout(self, waited: float) -> UpstreamQueueTimeout:
        return UpstreamQueueTimeout(f"{self.host}:{self.port} had no free connection within "
                                    f"{waited:g}s")

    def _wake_one(self) -> None:
        """A connection slot came free: the oldest waiter may open one."""
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def close(self) -> None:
        self.retired = True
        for ex in self.idle:
            ex.close()
        self.idle.clear()


class Upstreams:
    """Every pool of this process, keyed by origin. One owner, closed on shutdown."""

    #: how often waiting exchanges are checked against their deadlines (their precision)
    SWEEP = 0.01

    def __init__(self, max_conns_per_backend: int, max_pending_per_backend: int = 1024,
                 clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.max_conns = max_conns_per_backend
        self.max_pending = max_pending_per_backend
        self.pools: dict[tuple[str, str, int], Pool] = {}
        self.waiting: set[Exchange] = set()  # exchanges waiting on a backend, every pool
        self._sweeper: asyncio.Task[None] | None = None

    def pool(self, origin: tuple[str, str, int]) -> Pool:
        p = self.pools.get(origin)
        if p is None:
            loop = asyncio.get_running_loop()
            p = self.pools[origin] = Pool(*origin, self.max_conns, loop, self.waiting,
                                          self.max_pending, self.clock)
            if self._sweeper is None:
                self._sweeper = loop.create_task(self._sweep(), name="upstream-deadlines")
        return p

    async def _sweep(self) -> None:
        """Fail every exchange whose idle or total deadline has passed."""
        loop = asyncio.get_running_loop()
        waiting = self.waiting
        while True:
            # idle: a slower beat (a new waiter is checked at most 50 ms late)
            await asyncio.sleep(self.SWEEP if waiting else 0.05)
            if waiting:
                now = loop.time()
                for ex in [ex for ex in waiting if ex.wait_until <= now]:
                    waiting.discard(ex)
                    ex._on_timer()

    def retire_except(self, keep: set[tuple[str, str, int]]) -> None:
        """Close idle connections of origins no longer configured (in-flight ones finish)."""
        for origin in list(self.pools):
            if origin not in keep:
                self.pools.pop(origin).close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for p in self.pools.values():
            p.close()
        self.pools.clear()
        await asyncio.sleep(0)
