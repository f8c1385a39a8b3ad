"""The JSON endpoints the operator console reads beside /v1/status and /v1/audit.

Owns `GET /v1/whoami` (the subject and scopes of the presented token: how the page learns
who is signed in, also when an OIDC-fronting proxy adds the token), `GET /v1/fleet` (every
instance the store heard from: generation, config digest, heartbeat age, build; this
instance's own store connection, staleness and fail-closed state) and `GET /v1/traffic`
(per-version request rate, error rate and p99 of the fleet's last minutes). May import aiohttp.web and
the admin auth types; gets its data through the small protocols declared here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from gateway.admin import etag
from gateway.admin.auth import SCOPES, Principal
from gateway.admin.expect import expect_handler
from gateway.buildid import build_id
from gateway.errors import Forbidden, StateError

__all__ = ["ConsoleApi", "FleetView"]

LOST_AFTER = 12  # leases: an instance silent that long is dropped from the fleet view

_CAN = tuple(s.split(":", 1)[1] for s in SCOPES)

Authorize = Callable[[web.Request, str | None], Awaitable[Principal]]


class Heartbeats(Protocol):
    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]: ...


class StoreHealth(Protocol):
    def status(self) -> dict[str, Any]: ...


class Traffic(Protocol):
    async def view(self) -> dict[str, Any]: ...


class FleetView:
    """Who is serving, and whether they agree: assembled from the store's heartbeats.

    Another instance's own store connection cannot be seen from here: an instance that
    loses the store stops heartbeating, so it shows as silent (`live` false), then goes."""

    def __init__(self, instance: str, lease: float, heartbeats: Heartbeats,
                 health: StoreHealth, generation: Callable[[], int],
                 digest: Callable[[], str]) -> None:
        self.instance = instance
        self.lease = lease
        self.heartbeats = heartbeats
        self.health = health
        self.generation = generation
        self.digest = digest

    async def view(self) -> dict[str, Any]:
        gen, digest = self.generation(), self.digest()
        error = None
        try:
            seen = await self.heartbeats.fleet(self.lease * LOST_AFTER)
        except StateError as exc:
            seen, error = {}, str(exc)
        rows = []
        for name in sorted(seen.keys() | {self.instance}):
            hb = seen.get(name)
            if hb is None:  # ourselves, before our first heartbeat or without the store
                rows.append({"instance": name, "self": True, "live": False, "generation": gen,
                             "behind": 0, "config": digest, "config_matches": True,
                             "seen_s_ago": None, "key_ids": None, "build": build_id()})
                continue
            their = int(hb.get("generation", 0))
            rows.append({"instance": name, "self": name == self.instance,
                         "live": float(hb.get("seen_s_ago", 0)) <= self.lease,
                         "generation": their, "behind": max(0, gen - their),
                         "config": str(hb.get("config", "")),
                         "config_matches": hb.get("config") == digest,
                         "seen_s_ago": hb.get("seen_s_ago"),
                         # (signed with its heartbeat: the key it signs with, then its
                         # previous one; None: a version before, or an unkeyed store)
                         "key_ids": list(hb["key_ids"]) or None if isinstance(
                             hb.get("key_ids"), list) else None,
                         # (published with its addresses; None: a version before it, whose
                         # build nobody can tell apart but by its host: an upgrade's laggard)
                         "build": hb.get("build") if isinstance(hb.get("build"), str) else None})
        live = [r for r in rows if r["live"]]
        return {"instance": self.instance, "generation": gen, "config_digest": digest,
                "lease_s": self.lease, "store": self.health.status(), "fleet_error": error,
                "live": len(live), "config_digests": len({r["config"] for r in live}),
                "key_ids": _key_ids(live), "instances": rows}


def _key_ids(live: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per key id, how many live instances sign with it and how many trust it (sign or
    verify with it): a rotation's step 2 is safe once the new key's `trusted` is `live`
    (every instance holds it), step 3 once its `signing` is (README Key rotation). Live
    instances that said no key ids are in neither count."""
    out: dict[str, dict[str, int]] = {}
    for row in live:
        for i, kid in enumerate(row["key_ids"] or ()):
            got = out.setdefault(kid, {"signing": 0, "trusted": 0})
            got["trusted"] += 1
            got["signing"] += i == 0
    return out


class ConsoleApi:
    def __init__(self, authorize: Authorize, fleet: FleetView, traffic: Traffic) -> None:
        self.authorize = authorize
        self.fleet_view = fleet
        self.traffic_view = traffic

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/whoami", self.whoami, expect_handler=expect_handler)
        router.add_get("/v1/fleet", self.fleet, expect_handler=expect_handler)
        router.add_get("/v1/traffic", self.traffic, expect_handler=expect_handler)

    async def whoami(self, request: web.Request) -> web.Response:
        """Who the presented token says you are. Without any Authorization header the
        answer is "nobody" (200, `subject` null): how the console finds out whether an
        OIDC-fronting proxy signs its calls in, without an error or a failed-auth count
        (there is no token to guess at). A token that is present is checked as always."""
        if "Authorization" not in request.headers:
            return web.json_response({"subject": None, "scopes": [],
                                      "can": dict.fromkeys(_CAN, False)})
        p = await self.authorize(request, None)
        can = {}
        for name in _CAN:
            try:
                p.require(f"killgate:{name}")
                can[name] = True
            except Forbidden:
                can[name] = False
        return web.json_response({"subject": p.subject, "scopes": sorted(p.scopes),
                                  "can": can})

    async def fleet(self, request: web.Request) -> web.Response:
        await self.authorize(request, "killgate:read")
        return web.json_response(await self.fleet_view.view())

    async def traffic(self, request: web.Request) -> web.Response:
        await self.authorize(request, "killgate:read")
        return etag.respond(request, await self.traffic_view.view())
