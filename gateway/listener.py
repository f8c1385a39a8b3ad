"""The data-plane listener: aiohttp's low-level server with a header-read deadline.

Owns what aiohttp does not do (RELIABILITY rows 37-38, measured: aiohttp keeps a
connection that never sends a request open forever): a connection must deliver a complete
request head within `server.header_timeout` of being accepted, or it is closed. Later
requests on a keep-alive connection are covered by aiohttp's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["GuardedServer"]


class _HeadDeadline(RequestHandler):
    __slots__ = ("_kg_deadline", "_kg_timeout")
    _kg_timeout: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._kg_deadline: asyncio.TimerHandle | None = self._loop.call_later(
            self._kg_timeout, self._kg_expire)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._kg_deadline is not None and self._request_count:
            self._kg_deadline.cancel()
            self._kg_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._kg_deadline is not None:
            self._kg_deadline.cancel()
            self._kg_deadline = None
        super().connection_lost(exc)

    def _kg_expire(self) -> None:
        self._kg_deadline = None
        if not self._request_count and self.transport is not None:
            self.transport.abort()  # slowloris, or an idle socket that never spoke


class GuardedServer(web.Server):
    """`web.Server` whose connections must send a request head within `header_timeout`."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        proto = _HeadDeadline(self, loop=self._loop, **self._kwargs)
        proto._kg_timeout = self.header_timeout
        return proto
