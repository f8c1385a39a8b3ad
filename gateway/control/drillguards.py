"""What stops a drill before or while it runs, besides its abort condition: a store-loss
drill that cannot run here (`store_skip`), a token that would expire before the restore
(`token_too_short`), and answers from another route than the drilled
one (`same_route`: a reload removed the drill route, or changed its match, and its requests
now reach the route users are served by).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.control.drillload import Traffic
from gateway.domain.drillplan import Plan
from gateway.domain.drillreport import other_route

__all__ = ["Check", "Pause", "same_route", "store_skip", "token_too_short"]

Pause = Callable[[float], Awaitable[None]]

#: why the store given is not the fleet's (None: it is), from the fleet's key prefix and
#: the ids of its instances (their heartbeats are in its store)
Check = Callable[[str, list[str]], Awaitable[str | None]]


async def store_skip(plan: Plan, fleet: dict[str, Any], pause: Pause | None,
                     check: Check | None) -> str | None:
    """Why a store-loss drill cannot run here (None: it can)."""
    store = fleet["status"].get("store") or {}
    if store.get("backend") != "redis":
        return (f"the fleet's state store is {store.get('backend')!r}: nothing to stop "
                "(store loss is drilled on a redis store)")
    if pause is None or not plan.store:
        return ("this drill was not given the store (--store URL): a store-loss drill "
                "runs next to the fleet and must be allowed to stop its store; give it the "
                "fleet's state.url (behind Sentinel, its redis+sentinel:// URL)")
    if store.get("policy") == "fail_closed" and \
            plan.hold * 1000 >= store.get("max_staleness_ms", 0):
        return ("the fleet's on_unavailable is fail_closed: a store outage of "
                f"{plan.hold:g}s would close every route for its users")
    if check is not None:
        return await check(fleet["state"].get("prefix") or "killgate",
                           sorted(fleet["status"].get("instances") or {}))
    return None


async def same_route(route: str, traffic: Traffic, stop: Callable[[str], None],
                     stopped: asyncio.Event, every: float = 0.1) -> None:
    """Stop the drill once one of its requests is answered by another route."""
    seen = 0
    while not stopped.is_set():
        new, seen = traffic.obs[seen:], len(traffic.obs)
        if (why := other_route(route, new)) is not None:
            stop(why)
            return
        await asyncio.sleep(every)


#: what a drill's restore and end may take after its windows (each is retried for 30 s)
RESTORE_MARGIN = 60.0


def token_too_short(authorization: str | None, plan: Plan,
                    now: Callable[[], float] = time.time) -> str | None:
    """Why the drill's token would be refused at its restore (it expires first), read from
    the token's own `exp` (not verified here: the admin API does that); None when it lives
    long enough, or says nothing of its expiry."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    windows = plan.steady + plan.hold + plan.settle
    need = windows + RESTORE_MARGIN
    left = exp - now()
    if left >= need:
        return None
    return (f"the token expires in {max(0.0, left):.0f}s, before this drill's restore is "
            f"done (its windows take {windows:g}s, the restore and end up to "
            f"{RESTORE_MARGIN:g}s more): the restore would be refused and what the drill "
            f"changed left in force; use a token that lives at least {need:.0f}s")
