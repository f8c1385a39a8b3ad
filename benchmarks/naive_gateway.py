"""killgate with a naive kill check: one redis GET awaited on every request.

For benchmarks/killswitch.py only: the same build as `killgate serve`, except that the
data-plane handler (`Proxy.handle`, which the connection calls from its parser callback for
each request) first awaits `GET kgbench:naive-kill` on redis (NAIVE_REDIS_URL), as a design
without an in-memory snapshot would: each request waits in a Task for the store's answer,
then goes on as killgate's own does (a 503 when the key is set). Never use this for anything
else.

(It patched `Proxy.__call__`, the aiohttp handler of the data plane before it ran on a
protocol of its own; since then `Proxy` defines no `__call__`, the patch only replaced the
class's instantiation hook, no request awaited a GET, and the "naive" figure was killgate's
own. The patch now refuses to start when the method it replaces is not `Proxy`'s own, and
killswitch.py checks redis counted a GET per request.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from gateway.cli.main import main
from gateway.dataplane import proxy
from gateway.dataplane.request import Request
from gateway.dataplane.wire import error_response

KEY = "kgbench:naive-kill"

if "handle" not in vars(proxy.Proxy):  # (a patch of an inherited name, or of none, is a no-op)
    raise SystemExit("benchmarks/naive_gateway.py: gateway.dataplane.proxy.Proxy defines no "
                     "`handle` of its own any more: patch the data plane's request entry point")
_original = proxy.Proxy.handle
_client: aioredis.Redis | None = None


async def _checked(self: proxy.Proxy, req: Request) -> None:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(os.environ["NAIVE_REDIS_URL"])
    if await _client.get(KEY):
        req.keep_alive = False
        req.respond(error_response(503, "killed (naive check)"))
        return
    _original(self, req)


def _naive_handle(self: proxy.Proxy, req: Request) -> None:
    self._spawn(_checked(self, req))


proxy.Proxy.handle = _naive_handle  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
