"""killgate with a naive kill check: one redis GET awaited on every request.

For benchmarks/killswitch.py only: the same build as `killgate serve`, except that the
data-plane handler first awaits `GET <prefix>:naive-kill` on redis (NAIVE_REDIS_URL), as a
design without an in-memory snapshot would. Never use this for anything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from gateway.cli.main import main
from gateway.dataplane import proxy

_original = proxy.Proxy.__call__
_client: aioredis.Redis | None = None


async def _naive_call(self, request):  # type: ignore[no-untyped-def]
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(os.environ["NAIVE_REDIS_URL"])
    if await _client.get("kgbench:naive-kill"):
        from aiohttp import web

        return web.Response(status=503)
    return await _original(self, request)


proxy.Proxy.__call__ = _naive_call  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
