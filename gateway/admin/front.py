"""The admin listener's one middleware: the head's size, the Host check, a write's span
and trace id, and the error answers, in one coroutine layer.

They were four middlewares (admin/listenerlimits.py's `head_limit`, admin/hosts.py's
`host_check`, admin/tracing.py's `middleware`, admin/middleware.py's `errors`), each a
coroutine and a partial around every request, a kill's before its commit leaves among
them. This one runs the same checks in the same order with the same answers (each
module's own function decides: `head_size`, `host_allowed` and `host_refusal`,
`answer_error`), so that the order cannot drift: a head over the cap is refused 431 and
its connection closed before the Host is looked at; a Host this listener does not answer
to is refused 421 before any span; a write to an endpoint gets its span, whose trace id
the write's audit event carries, and which ends with the final status (an error's answer
included); every exception below is answered in the API's shape; and `front(...).expect`,
the routes' expect handler, which aiohttp runs before any middleware, checks the head's
size and Host the same way before it judges an `Expect` (admin/expect.py).
tests/test_admin_front.py
holds the answers equal to the four middlewares' for the inputs that matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin.expect import expectation
from gateway.admin.hosts import host_allowed, host_refusal
from gateway.admin.listenerlimits import Limits, head_refusal, head_size
from gateway.admin.middleware import answer_error
from gateway.admin.ports import Counters
from gateway.admin.tracing import TRACE_ID, WRITE_METHODS, AdminSpans
from gateway.config_admin import AdminConfig

__all__ = ["front"]


def front(limits: Limits, admin: Callable[[], AdminConfig], counters: Counters,
          loopback: bool, spans: AdminSpans) -> Any:
    """The middleware (module docstring); it checks the head's size itself, so that
    admin/listener.py's AdminRunner adds no `head_limit` of its own (`checks_head`)."""
    cap = limits.max_head_bytes

    @web.middleware
    async def admin_front(request: web.Request, handler: Any) -> web.StreamResponse:
        if head_size(request) > cap:
            return head_refusal(limits)
        if not host_allowed(request.headers.get("Host"), admin(), loopback):
            return host_refusal(admin(), counters)
        resource = request.match_info.route.resource
        if request.method not in WRITE_METHODS or resource is None:
            # reads make no span; a path that names no endpoint gets none either
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - answered as `errors` answers it
                return answer_error(request, exc)
        span = spans.start(request.method, resource.canonical, request.headers,
                           request.remote or "unknown")
        request[TRACE_ID] = span.trace_id
        status = 500
        try:
            try:
                resp = await handler(request)
            except Exception as exc:  # noqa: BLE001 - answered as `errors` answers it
                resp = answer_error(request, exc)
            status = resp.status
            return resp
        except web.HTTPException as exc:  # (one that is not an error: raised again)
            status = exc.status
            raise
        finally:
            span.end(status)

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """The routes' expect handler (admin/expect.py; aiohttp runs it before this
        middleware): the head's size and Host as above, then the expectation."""
        if head_size(request) > cap:
            return head_refusal(limits)
        if not host_allowed(request.headers.get("Host"), admin(), loopback):
            resp = host_refusal(admin(), counters)
            resp.force_close()  # (a body held back for a 100 never comes)
            return resp
        return await expectation(request)

    admin_front.checks_head = True  # type: ignore[attr-defined]
    admin_front.expect = expect  # type: ignore[attr-defined]
    return admin_front
