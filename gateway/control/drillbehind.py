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

With `serve --workers N` the N workers are N instances that published one admin address
(SO_REUSEPORT: the kernel hands each connection to one of them): asked once, another
worker answered, and a worker cut off from the store, still enforcing the drill's kill, was
taken for gone. So an address the drill started with several instances at is asked again,
each time on a new connection, until each of them has answered as itself, up to `asks_for`
times (a worker that has not answered by then has left: the chance of missing a live one is
under `MISS`).

An answer that says "behind" must prove it (domain/readyzproof.py: a MAC with the drill's
key, derived from the state signing key, over instance, generation and the nonce sent): a
process at a replayed heartbeat's address cannot, and is named `unverified` (a warning),
not `behind`. A drill that got no keys when it opened (a fleet without a state signing key,
or older) checks nothing, as before.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.readyzproof import verified

__all__ = ["ASK_TIMEOUT", "Behind", "asks_for", "behind"]

#: seconds an instance is given to answer for itself (one that does not has left)
ASK_TIMEOUT = 3.0
#: the most of an instance's /readyz answer read (a real one is a few KiB)
MAX_READY = 256 * 1024
#: the chance, at most, that a live worker of a group never answers `asks_for` asks
MISS = 1e-6
#: the most asks of one address, how many at once, and for how long in all (seconds)
MAX_ASKS = 1024
AT_ONCE = 8
ASK_FOR = 10.0


@dataclass(frozen=True, slots=True)
class Behind:
    """`late`: alive without the restore (proved so, or no keys to prove it with);
    `unverified`: answered so at their address without a valid proof."""
    late: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def asks_for(workers: int) -> int:
    """How often an address `workers` instances share is asked, at most: each new
    connection reaches one of them (the kernel's hash of it), so one is missed `k` times
    with chance (1 - 1/workers)^k."""
    if workers <= 1:
        return 1
    return min(MAX_ASKS, math.ceil(math.log(MISS) / math.log1p(-1 / workers)))


def _generation(doc: Any) -> int | None:
    gen = doc.get("generation") if isinstance(doc, dict) else None
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else None


async def _ready(session: aiohttp.ClientSession, admin: str,
                 params: Mapping[str, str]) -> Any:
    """The /readyz answer at `admin` (no token sent, no redirect followed, a connection
    of its own), None when there is none to read (gone, refused, too big, not JSON)."""
    try:
        async with session.get(admin.rstrip("/") + "/readyz", allow_redirects=False,
                               params=params,
                               headers={"accept": "application/json",
                                        "user-agent": "killgate-drill",
                                        # (the next ask: a new connection, maybe to
                                        # another worker sharing the port)
                                        "connection": "close"},
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


class _Asker:
    def __init__(self, api: AdminClient, generation: int, drill: str | None,
                 keys: Mapping[str, str] | None) -> None:
        self.api = api
        self.generation = generation
        self.drill = drill
        self.keys = keys if drill is not None and keys else None

    async def _one(self, admin: str) -> tuple[Any, str | None]:
        """An answer at `admin` and the nonce it was asked with (None: no proof asked)."""
        if self.keys is None or self.drill is None:
            return await _ready(self.api.session, admin, {}), None
        nonce = secrets.token_urlsafe(18)
        return await _ready(self.api.session, admin,
                            {"drill": self.drill, "nonce": nonce}), nonce

    async def group(self, names: Collection[str], admin: str, workers: int,
                    out: Behind) -> None:
        """Ask `admin` until each of `names` answered there as itself (or asks_for
        `workers` or ASK_FOR ran out, or nobody answers there: the group left)."""
        pending = set(names)
        limit, asked = asks_for(workers), 0
        loop = asyncio.get_running_loop()
        until = loop.time() + ASK_FOR
        while pending and asked < limit and (asked == 0 or loop.time() < until):
            n = min(AT_ONCE, limit - asked)
            answers = await asyncio.gather(*(self._one(admin) for _ in range(n)))
            asked += n
            if all(doc is None for doc, _ in answers):
                return  # (gone, refused: every instance at that address left)
            for doc, nonce in answers:
                name = doc.get("instance") if isinstance(doc, dict) else None
                if not isinstance(name, str) or name not in pending:
                    continue  # (another worker of the group, or another process)
                pending.discard(name)
                gen = _generation(doc)
                if gen is None or gen >= self.generation:
                    continue  # (applied it, or cannot say)
                if nonce is None or verified(self.keys or {}, doc, nonce):
                    out.late.append(name)
                else:
                    out.unverified.append(name)


async def behind(api: AdminClient, started: Collection[str], admin_of: Mapping[str, str],
                 generation: int, drill: str | None = None,
                 keys: Mapping[str, str] | None = None) -> Behind:
    """The instances of `started` still running a generation older than `generation` (the
    restore's), sorted. `admin_of`: the admin URL each published when the drill started;
    `drill` and `keys` (its `readyz_keys`): what an answer's proof is checked with."""
    try:
        live = (await api.call("GET", "/v1/status")).get("instances") or {}
    except DrillApiError:
        live = {}
    sharing = Counter(admin_of[n] for n in started if admin_of.get(n))
    ask: dict[str, list[str]] = {}
    for name in sorted(started):
        gen = _generation(live.get(name)) if isinstance(live, dict) else None
        if gen is not None and gen >= generation:
            continue  # (live, and applied it)
        admin = admin_of.get(name)
        if admin:  # (an instance that published no address cannot be asked)
            ask.setdefault(admin, []).append(name)
    out = Behind()
    asker = _Asker(api, generation, drill, keys)
    await asyncio.gather(*(asker.group(names, admin, sharing[admin], out)
                           for admin, names in ask.items()))
    out.late.sort()
    out.unverified.sort()
    return out
