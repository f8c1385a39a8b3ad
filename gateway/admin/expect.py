"""`Expect` on the admin listener: judged after the head's size and Host, answered in the
API's error shape.

aiohttp calls a route's expect handler before any middleware (`Application._handle`): its
default wrote `100 Continue` before admin/front.py looked at the head's size or Host (a
client told to send its body to a listener about to refuse it 421 or 431) and answered
any other expectation with its own plain-text 417. Every route of the admin app is added
with `expect_handler=expect_handler` (aiohttp's public route argument): the listener's
gate (front.py's `front(...).expect`, kept in the app under EXPECT_GATE) refuses a head
over the cap or a Host it does not answer to as front.py does, then `expectation` answers
anything but `100-continue` with a JSON 417, a Content-Length over `admin.max_body_size`
with a JSON 413 (what the handler answers once the body is sent), and writes the
`100 Continue` last.

What the public API cannot reach: a path no route matches (404) or a method a path does
not take (405). aiohttp's router answers those with a `SystemRoute`, built inside
`UrlDispatcher.resolve` with the default expect handler, which `Application._handle` calls
before the middleware: its `100 Continue` comes before front.py's checks and its 417 is
plain text there. `handler_args` only tunes the connection's RequestHandler (sizes,
timeouts); `web.Application(router=...)` is deprecated; the request handler a
`web.Server` is given is reached only through `AppRunner._make_server`, private. A
catch-all route would take every 405 over. tests/test_admin_expect.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http import HttpVersion11

from gateway.admin.middleware import json_error

__all__ = ["EXPECT_GATE", "expect_handler", "expectation"]

Gate = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

#: the listener's gate (front.py), kept in the admin app
EXPECT_GATE: web.AppKey[Gate] = web.AppKey("expect_gate")


async def expectation(request: web.Request) -> web.StreamResponse | None:
    """A 417 in the API's shape for an expectation this listener does not meet; for
    `100-continue`, a 413 for a Content-Length over the cap (the 100 asked for a body the
    handler then refused: tests/test_admin_expect.py), else the `100 Continue` written
    (None: the handler runs). HTTP/1.0 has no expectations: ignored, as aiohttp ignores it."""
    if request.version != HttpVersion11:
        return None
    value = request.headers.get("Expect", "")
    if value.strip().lower() == "100-continue":
        cap = request.client_max_size  # (a body over it is refused 413 once sent: say so now)
        if cap and (size := request.content_length or 0) > cap:
            resp = json_error(413, "body_too_large",
                              f"the request body is {size} bytes, over admin.max_body_size "
                              f"({cap}); send a smaller one")
            resp.force_close()  # (its body never comes: the client waits for a 100)
            return resp
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (as aiohttp's default: the body not begun yet)
        return None
    resp = json_error(417, "expectation_failed",
                      f"this listener meets no expectation but 100-continue; the request "
                      f"said Expect: {value[:100]!r}; send it without that field")
    resp.force_close()  # (its body, if any, never comes: the client waits for a 100)
    return resp


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Every admin route's expect handler: the listener's gate, else `expectation`."""
    gate = request.app.get(EXPECT_GATE)
    return await (gate if gate is not None else expectation)(request)
