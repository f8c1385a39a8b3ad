"""Keep-alive pools to the model backends (a connection cap and a first-come queue per origin;
a released connection goes to the oldest waiter) and the sweeper that fails exchanges past
their idle or total deadline. A connection is pooled again only after a complete, keep-alive
answer; anything else closes it. Each connection's exchange is `exchange.py`'s.

A pooled connection idle for longer than `idle_timeout` (`server.backend_idle_timeout`) is
closed instead of reused: a backend closes its idle connections after its own keep-alive
timeout (uvicorn's and Node's: 5 s), and a request sent just as it does meets a close with
no answer, which only a method safe to send twice survives (attempts.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from gateway.dataplane.clock import Clock
from gateway.dataplane.exchange import Exchange
from gateway.errors import (
    UpstreamConnectError,
    UpstreamOverflow,
    UpstreamQueueTimeout,
    UpstreamTimeout,
)
from gateway.sockets import connect_failure

__all__ = ["Pool", "Upstreams"]


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(self, scheme: str, host: str, port: int, max_conns: int,
                 loop: asyncio.AbstractEventLoop, waiting: set[Exchange],
                 max_pending: int, clock: Clock | None = None,
                 idle_timeout: float = 4.0) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.idle_timeout = idle_timeout
        self.loop = loop
        self.clock = clock or Clock()
        self.waiting = waiting  # shared by every pool; the Upstreams sweeper scans it
        self.max_conns = max_conns
        self.max_pending = max_pending
        self.idle: list[Exchange] = []
        self.open = 0
        self._waiters: deque[asyncio.Future[Exchange | None]] = deque()
        default = 443 if scheme == "https" else 80  # (RFC 9110 7.2: any other port is named)
        self.host_header = (host if port == default else f"{host}:{port}").encode("idna")
        if ":" in host:
            self.host_header = f"[{host}]:{port}".encode()
        # the request line's end and our Host field, as a backend's request head has them
        self.host_line = b" HTTP/1.1\r\nhost: " + self.host_header + b"\r\n"
        # how a URL the backend builds from that Host begins (answerparsing: LOCATED), with
        # and without its scheme's default port
        prefix = scheme.encode() + b"://"
        name = (f"[{host}]".encode() if ":" in host else host.encode("idna")).lower()
        self.origins: tuple[bytes, ...] = (prefix + name + b":%d" % port,)
        if port == default:
            self.origins += (prefix + name,)
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
            if not new or self.open >= self.max_conns:
                reused = self.take_idle()
                if reused is not None:
                    return reused, True
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
            try:  # (asyncio.timeout: 3.11's wait_for can swallow a cancel that comes with
                # the result, and a client already gone would then be sent to the backend)
                async with asyncio.timeout(left):
                    handed = await fut
            except BaseException as exc:
                # cancelled, or out of time, after being served (both in one loop turn):
                # pass what it was given on (a connection dropped here stayed counted in
                # `open` for good; a slot's wake dropped left the next waiter waiting)
                if fut.done() and not fut.cancelled():
                    given = fut.result()
                    if given is not None:
                        self.release(given)
                    else:
                        self._wake_one()
                if isinstance(exc, TimeoutError):
                    self.clock.now = self.loop.time()  # (a timer ended the wait: see _sweep)
                    raise self._queue_timeout(connect_timeout) from None
                raise
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
            self.clock.now = self.loop.time()  # (woken by a close or a timer, not bytes:
            # the idle check of `take_idle` must not see the time the wait began)
            if handed is not None and not handed.closed and handed.keep_alive:
                handed._reset()
                return handed, True
        self.open += 1
        try:
            async with asyncio.timeout(connect_timeout):
                _, ex = await self.loop.create_connection(lambda: Exchange(self), self.host,
                                                          self.port, ssl=self._ssl)
        except TimeoutError:
            self.open -= 1
            self._wake_one()
            self.clock.now = self.loop.time()  # (a timer ended the wait: see Upstreams._sweep)
            raise UpstreamTimeout("connect", delivered=False) from None
        except (OSError, ssl.SSLError) as exc:
            self.open -= 1
            self._wake_one()
            raise UpstreamConnectError(
                f"cannot connect: {connect_failure(exc)}") from None
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        return ex, False

    def take_idle(self) -> Exchange | None:
        """A pooled connection at once, or None (the fast path never waits). The newest
        first; one idle past `idle_timeout` is closed (and so is every one under it)."""
        idle = self.idle
        while idle:
            ex = idle.pop()
            if ex.closed or not ex.keep_alive:  # (aborted while idle: not closed yet)
                continue
            if self.clock.now - ex.pooled_at > self.idle_timeout:
                ex.close()
                continue
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
            ex.pooled_at = self.clock.now
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
                 clock: Clock | None = None, idle_timeout: float = 4.0) -> None:
        self.clock = clock or Clock()
        self.idle_timeout = idle_timeout
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
                                          self.max_pending, self.clock, self.idle_timeout)
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
                expired = [ex for ex in waiting if ex.wait_until <= now]
                if expired:  # what these failures lead to (a 504, a failover) happens now,
                    self.clock.now = now  # not at the last socket event (the shared clock)
                for ex in expired:
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
