"""Admin HTTP API (CONTRACT §4) on its own listener, separate from the data plane.

Owns the admin routes and the mapping of ApiError to JSON error bodies. Handlers are
methods of one object built with the gateway's parts; nothing here touches sockets to
backends or the state store directly (it goes through the StateSync interface).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import ApiError

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["AdminApi", "json_error"]

MAX_BODY = 64 * 1024


def json_error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.type, exc.message)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "body_too_large", f"admin request bodies are limited to {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors],
                              client_max_size=self.gw.loaded.config.admin.max_body_size)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "instance": self.gw.instance})

    async def readyz(self, request: web.Request) -> web.Response:
        gw = self.gw
        body = {"ready": gw.ready, "instance": gw.instance, "draining": gw.draining,
                "state": gw.sync.status() if gw.sync else None}
        return web.Response(status=200 if gw.ready else 503, text=json.dumps(body),
                            content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        self.gw.metrics.set("killgate_inflight_requests", self.gw.inflight.count)
        self.gw.metrics.set("killgate_state_generation", self.gw.holder.doc.generation)
        return web.Response(text=self.gw.metrics.render(), content_type="text/plain",
                            charset="utf-8", headers={"x-content-type-options": "nosniff"})
