"""After a drill's restore: the instances the drill started with that are still running and
have not applied it.

A restore's receipt counts live instances only (a heartbeat the store saw within the
lease). An instance cut off from the store stops heartbeating but serves on, enforcing
what it held: the drill's kill. Its lease ran out, the receipt did not wait for it, and a
drill whose traffic did not reach it (`--instances` naming a load balancer, or another
instance) passed with a warning, though the README promises "every instance having
applied the restore". An instance that left (it said goodbye, or its process is gone) is
fine: it enforces nothing. So each instance the drill started with is asked, unless the
fleet's status shows it live at the restore's generation or later: through the fleet's
status first, then at the admin address it published when the drill started. One that
answers there, as itself, with an older generation is named (`behind`); one that does not
answer has left. HTTP through drillload's AdminClient.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from typing import Any

import aiohttp

from gateway.control.drillload import AdminClient, DrillApiError

__all__ = ["ASK_TIMEOUT", "behind"]

#: seconds an instance is given to answer for itself (one that does not has left)
ASK_TIMEOUT = 3.0
#: the most of an instance's /readyz answer read (a real one is a few KiB)
MAX_READY = 256 * 1024


def _generation(doc: Any) -> int | None:
    gen = doc.get("generation") if isinstance(doc, dict) else None
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else None


async def _ready(session: aiohttp.ClientSession, admin: str) -> Any:
    """The /readyz answer at `admin` (no token sent, no redirect followed), None when there
    is none to read (gone, refused, too big, not JSON)."""
    try:
        async with session.get(admin.rstrip("/") + "/readyz", allow_redirects=False,
                               headers={"accept": "application/json",
                                        "user-agent": "killgate-drill"},
                               timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT)) as r:
            if r.status not in (200, 503):
                return None
            raw = bytearray()
            async for chunk in r.content.iter_chunked(65536):  # (read(n) may stop short)
                raw += chunk
                if len(raw) > MAX_READY:
                    return None
            return json.loads(raw)
    except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError):
        return None


async def _own(api: AdminClient, name: str, admin: str, generation: int) -> str | None:
    """`name` when the instance at `admin` answers as `name` with a generation older than
    `generation` (None: it applied it, left, or cannot say)."""
    doc = await _ready(api.session, admin)
    gen = _generation(doc)
    if not isinstance(doc, dict) or doc.get("instance") != name or gen is None \
            or gen >= generation:
        return None  # (gone: it left; another process at that address now; or applied)
    return name


async def behind(api: AdminClient, started: Collection[str], admin_of: Mapping[str, str],
                 generation: int) -> list[str]:
    """The instances of `started` still running a generation older than `generation` (the
    restore's), sorted. `admin_of`: the admin URL each published when the drill started."""
    try:
        live = (await api.call("GET", "/v1/status")).get("instances") or {}
    except DrillApiError:
        live = {}
    asks = []
    for name in sorted(started):
        gen = _generation(live.get(name)) if isinstance(live, dict) else None
        if gen is not None and gen >= generation:
            continue  # (live, and applied it)
        admin = admin_of.get(name)
        if admin:  # (an instance that published no address cannot be asked)
            asks.append(_own(api, name, admin, generation))
    found = await asyncio.gather(*asks)
    return sorted(n for n in found if n is not None)
