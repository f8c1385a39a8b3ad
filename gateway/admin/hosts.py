"""Which `Host` names the admin listener answers to: no DNS rebinding.

A page on another site can make a browser on the operator's machine send requests to a
name it controls that it re-points at 127.0.0.1: the browser takes the answers as that
site's own and lets the page read them. The admin endpoints that need no login
(`/metrics`, `/readyz`, `/openapi.json`, the console's files) would tell it the routes,
versions, traffic and state. Such a request always carries the attacker's name in `Host`
(rebinding needs a name; a page at an IP address is that address's own origin).

So a listener on a loopback address (the default) answers only to `localhost` (and
`*.localhost`), IP addresses, and the names in `admin.allowed_hosts`; other names get 421.
A listener on another address answers to any name (the network reaches it anyway) unless
`admin.allowed_hosts` is set, which then applies there too. `"*"` allows every name. No
`Host` at all (HTTP/1.0) is allowed. `admin.allowed_hosts` is read per request (a reload
takes effect at once); whether the listener is on loopback is the address it was bound to
(`admin.listen` waits for a restart: a reload moving it must not change the check).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin.middleware import json_error
from gateway.admin.ports import Counters
from gateway.config_admin import AdminConfig
from gateway.config_types import is_loopback, parse_listen

__all__ = ["host_allowed", "host_check", "host_refusal"]


@functools.lru_cache(maxsize=32)
def _name(host: str) -> str | None:
    """The name of a `Host` value without its port, lower-case, without a trailing dot;
    None for an IP address (v6 in brackets, or v4). Kept for the last few values (a
    client sends the same Host on every call: parsing it as an IP address was ~220
    bytecodes of every admin request, a kill's before its commit leaves among them)."""
    h = host.strip()
    if h.startswith("["):
        return None
    name, sep, port = h.rpartition(":")
    if not sep or not port.isdigit():
        name = h
    name = name.lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def host_allowed(host: str | None, admin: AdminConfig, loopback: bool | None = None) -> bool:
    """Whether the admin listener answers a request with this `Host` (module docstring);
    `loopback`: whether the listener is bound to a loopback address (None: admin.listen's)."""
    if not host:
        return True
    allowed = admin.allowed_hosts
    if loopback is None:
        loopback = is_loopback(parse_listen(admin.listen)[0])
    if allowed is None and not loopback:
        return True
    name = _name(host)
    if name is None or name == "localhost" or name.endswith(".localhost"):
        return True
    return allowed is not None and ("*" in allowed or name in allowed)


def host_refusal(admin: AdminConfig, counters: Counters) -> web.Response:
    """The 421 for a name this listener does not answer to (counted)."""
    counters.inc("killgate_admin_refused_total", ("host",), label_names=("reason",))
    why = ("it is not in admin.allowed_hosts" if admin.allowed_hosts is not None else
           "this listener is on a loopback address, so it answers to localhost and IP "
           "addresses only (another site's page could otherwise read it through a name "
           "it points at 127.0.0.1)")
    return json_error(421, "host_not_allowed",
                      f"this admin listener does not answer to that Host name: {why}; "
                      "to use the name, add it to admin.allowed_hosts")


def host_check(admin: Callable[[], AdminConfig], counters: Counters, loopback: bool) -> Any:
    """The middleware: 421 for a name this listener (bound to a loopback address or not)
    does not answer to."""

    @web.middleware
    async def check_host(request: web.Request, handler: Any) -> web.StreamResponse:
        if host_allowed(request.headers.get("Host"), admin(), loopback):
            return await handler(request)
        return host_refusal(admin(), counters)

    return check_host
