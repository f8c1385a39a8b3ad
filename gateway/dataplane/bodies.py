"""Reading request bodies for the proxy: bounded, with a stall deadline, replayable.

Owns the rules: a prefix is read first (the whole body when small, or as much as a
`model` lookup needs) so an undelivered request can be replayed to another version; the
rest streams after it; more than `max_body` bytes is BodyTooLarge (413), a pause longer
than `body_timeout` is BodyTimeout (408).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader, web

__all__ = ["BodyReader", "BodyTimeout", "BodyTooLarge"]


class BodyTooLarge(Exception):
    """The body exceeds `server.max_body_size`."""


class BodyTimeout(Exception):
    """The client stopped sending its body (a slow-body attack, or a stuck client)."""


class BodyReader:
    def __init__(self, max_body: int, peek_bytes: int, timeout: float) -> None:
        self.max_body = max_body
        self.peek_bytes = peek_bytes
        self.timeout = timeout

    async def prefix(self, request: web.BaseRequest, cl: int | None,
                     limit: int | None = None) -> bytes | None:
        """Read up to `limit` (default: the model peek size) bytes of the body.

        Returns None when the body is larger than max_body. What is read is replayed to
        the backend; the rest, if any, streams after it.
        """
        limit = limit or self.peek_bytes
        content = request.content
        if cl is not None and cl <= limit:
            if not cl:
                return b""
            if content.is_eof() and content.total_bytes == cl:
                return content.read_nowait()  # already here: no await, no copy
            try:
                async with asyncio.timeout(self.timeout):
                    return await content.readexactly(cl)
            except TimeoutError:
                raise BodyTimeout from None
        parts: list[bytes] = []
        n = 0
        while n < limit:
            chunk = await self._next(content)
            if not chunk:
                break
            parts.append(chunk)
            n += len(chunk)
            if n > self.max_body:
                return None
        return b"".join(parts)

    async def _next(self, content: StreamReader) -> bytes:
        """The next bytes the client sends; BodyTimeout if it pauses too long."""
        try:
            async with asyncio.timeout(self.timeout):
                return await content.readany()
        except TimeoutError:
            raise BodyTimeout from None

    async def chain(self, first: bytes, request: web.BaseRequest,
                    already: int) -> AsyncIterator[bytes]:
        """`first` (the prefix already read), then the rest of the body as it arrives;
        BodyTooLarge once more than max_body bytes came in all."""
        if first:
            yield first
        content = request.content
        n = already
        while True:
            chunk = await self._next(content)
            if not chunk:
                return
            n += len(chunk)
            if n > self.max_body:
                raise BodyTooLarge
            yield chunk
