"""The data-plane listener: aiohttp's low-level server with a header-read deadline, a
send deadline for slow readers, and a connection cap.

Owns what aiohttp does not do (RELIABILITY rows 37-39, measured: aiohttp keeps a
connection that never sends a request open forever, and waits forever on a client that
stops reading):

* a connection must deliver a complete request head within `server.header_timeout` of
  being accepted, or it is closed. Later requests on a keep-alive connection are covered by
  aiohttp's keep-alive timeout;
* a client whose socket stays full for `server.send_timeout` (no room for one more
  write: it reads nothing, or far too slowly) is dropped, like nginx's `send_timeout`:
  the response's backend exchange and its pooled connection are freed instead of being
  held by a reader that never comes back. The timer is armed only while the transport
  has paused writing, so it costs nothing per write;
* beyond `server.max_connections` open connections, a new one is closed as soon as it is
  accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["GuardedServer"]


class _GuardedProtocol(RequestHandler):
    __slots__ = ("_kg_deadline", "_kg_send", "_kg_server", "_kg_timeout")
    _kg_timeout: float
    _kg_server: GuardedServer
    _kg_deadline: asyncio.TimerHandle | None
    _kg_send: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._kg_server
        if server.open_connections() > server.max_connections:
            self._kg_deadline = None
            server.on_refused()
            cast(asyncio.Transport, transport).abort()  # over the cap: refuse fast
            return
        self._kg_deadline = self._loop.call_later(self._kg_timeout, self._kg_expire)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._kg_deadline is not None and self._request_count:
            self._kg_deadline.cancel()
            self._kg_deadline = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._kg_send is None:
            self._kg_send = self._loop.call_later(self._kg_server.send_timeout,
                                                  self._kg_send_expire)

    def resume_writing(self) -> None:
        if self._kg_send is not None:
            self._kg_send.cancel()
            self._kg_send = None
        super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._kg_deadline is not None:
            self._kg_deadline.cancel()
            self._kg_deadline = None
        if self._kg_send is not None:
            self._kg_send.cancel()
            self._kg_send = None
        super().connection_lost(exc)

    def _kg_send_expire(self) -> None:
        self._kg_send = None
        if self.transport is not None:
            self._kg_server.on_send_timeout()
            self.transport.abort()  # the handler is cancelled; its backend exchange closed

    def _kg_expire(self) -> None:
        self._kg_deadline = None
        if not self._request_count and self.transport is not None:
            self.transport.abort()  # slowloris, or an idle socket that never spoke


class GuardedServer(web.Server):
    """`web.Server` whose connections must send a request head within `header_timeout` and
    read what they are sent within `send_timeout`, and that holds at most `max_connections`
    of them."""

    def __init__(self, handler: Any, *, header_timeout: float, send_timeout: float = 60.0,
                 max_connections: int = 20_000, on_refused: Callable[[], None] = lambda: None,
                 on_send_timeout: Callable[[], None] = lambda: None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self.max_connections = max_connections
        self.on_refused = on_refused
        self.on_send_timeout = on_send_timeout

    def open_connections(self) -> int:
        conns = getattr(self, "_connections", None)  # aiohttp's own dict: O(1)
        return len(conns) if conns is not None else len(self.connections)

    def __call__(self) -> RequestHandler:
        proto = _GuardedProtocol(self, loop=self._loop, **self._kwargs)
        proto._kg_timeout = self.header_timeout
        proto._kg_server = self
        proto._kg_send = None
        return proto
