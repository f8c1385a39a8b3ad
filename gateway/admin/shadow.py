"""`GET /v1/routes/{route}/shadow` (scope killgate:read): a route's shadow results.

Owns the endpoint of CONTRACT §5.5: the fleet's comparison counts, agreement, dropped
copies, latency of both sides and the newest sampled disagreements (`?limit=N`, 1-100,
default 20). Refusals: 404 for an unknown route or a route without a shadow, 400 for a bad
`limit`; a store that cannot be read is a 503 (nothing is guessed). May import aiohttp.web
and the admin auth types; gets the results through the protocol declared here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from gateway.admin.auth import Principal
from gateway.admin.expect import expect_handler
from gateway.config import Config, RouteConfig
from gateway.errors import ApiError

__all__ = ["MAX_LIMIT", "ShadowApi"]

MAX_LIMIT = 100
Authorize = Callable[[web.Request, str | None], Awaitable[Principal]]


class Reports(Protocol):
    async def report(self, rc: RouteConfig, limit: int = 20) -> dict[str, Any]: ...


class ShadowApi:
    def __init__(self, authorize: Authorize, reports: Reports,
                 config: Callable[[], Config]) -> None:
        self.authorize = authorize
        self.reports = reports
        self.config = config

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/routes/{route}/shadow", self.shadow, expect_handler=expect_handler)

    async def shadow(self, request: web.Request) -> web.Response:
        await self.authorize(request, "killgate:read")
        name = request.match_info["route"]
        rc = self.config().route(name)
        if rc is None:
            raise ApiError(404, "unknown_route", f"no route named {name!r}")
        if rc.shadow is None:
            raise ApiError(404, "no_shadow", f"route {name!r} has no shadow (routes[].shadow "
                                             "in the config file)")
        extra = set(request.query) - {"limit"}
        if extra:
            raise ApiError(400, "bad_request", f"unknown query parameter {sorted(extra)[0]!r}")
        given = request.query.getall("limit", [])
        if len(given) > 1:
            raise ApiError(400, "bad_request", f"'limit' is given {len(given)} times; give it "
                                               "once")
        raw = given[0] if given else "20"
        if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "bad_request", f"'limit' must be a whole number from 1 to "
                                               f"{MAX_LIMIT}")
        return web.json_response(await self.reports.report(rc, int(raw)), dumps=strict_dumps)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else "Infinity" if v > 0 else "-Infinity"
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def strict_dumps(obj: Any) -> str:
    """JSON that strict readers take: a kept body's NaN or Infinity (a backend's, read as
    Python's json reads them) is written as a string, not as the bare token JSON lacks."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), allow_nan=False)
