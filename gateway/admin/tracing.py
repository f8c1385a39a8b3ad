"""Admin writes as traced calls: one span per write, and its trace id for the audit event.

Owns the aiohttp middleware (outermost, so the span sees the final status; the admin
listener runs the same steps inside admin/front.py's one middleware) and `TRACE_ID`,
the request key the write handlers read when they build the audit event. The span itself
comes from a small `AdminSpans` hook (telemetry/tracing.py implements it); nothing here
imports OpenTelemetry. Reads never make spans: they change nothing worth a trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web

__all__ = ["TRACE_ID", "WRITE_METHODS", "AdminSpans", "middleware"]

TRACE_ID = web.RequestKey("killgate.trace_id", str)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminSpan(Protocol):
    trace_id: str  # 32 hex digits, or "" when the call belongs to no trace

    def end(self, status: int) -> None: ...


class AdminSpans(Protocol):
    def start(self, method: str, endpoint: str, headers: Mapping[str, str],
              peer: str) -> AdminSpan: ...


def middleware(spans: AdminSpans) -> Callable[[web.Request, Handler],
                                              Awaitable[web.StreamResponse]]:
    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if request.method not in WRITE_METHODS or resource is None:
            # reads change nothing; a path that names no endpoint gets no span (a flood of
            # made-up paths must not cost a span each)
            return await handler(request)
        span = spans.start(request.method, resource.canonical, request.headers,
                           request.remote or "unknown")
        request[TRACE_ID] = span.trace_id
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.end(status)

    return traced
