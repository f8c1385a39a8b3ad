"""The redis store's analysis counts: `<p>:stats:<route>` (instance → its signed blob).

Owns `RedisStats` (a base of `RedisRecords`, redisaux.py): each instance's counts for a
route (canary analysis, shadow tallies) sealed with the route and instance in the MAC;
one that does not verify, or is over MAX_DOC_BYTES, is reported, never used, and removed
once read. And `turn`: a read of a whole hash lets the loop (the data plane) run.

Whoever can write to redis can refill a counts hash with forgeries faster than they are
removed: read whole (HGETALL) at every analysis tick, 200,000 of them cost every instance
a reply of megabytes and 200,000 MACs, again and again. So a hash of up to SCAN_BUDGET
entries is read whole, as before; a larger one (flooded) is read as the fleet's heartbeats
are (fleetscan.py): the counts of the instances known (listed at the last fleet read, those
this store wrote, those that verified at the last read of the hash) by name, then
SCAN_BUDGET entries more from where the last read of that hash stopped (HSCAN's cursor);
the rest is counted in `stats_flooded[route]`. The refused ones read are removed while
still as refused, so a flood drains as it is read; but not one sealed with a key id none
of ours (another key's: keptcounts.py), counted once and left until it is a left-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import Any

from gateway.errors import StateError
from gateway.state.beatorder import MAX_INSTANCES
from gateway.state.fleetscan import SCAN_BUDGET, bounded_read, prunable
from gateway.state.keptcounts import KeptCounts, rewritten
from gateway.state.redislink import RedisLink, Script
from gateway.state.signing import MAGIC
from gateway.state.store import MAX_DOC_BYTES

__all__ = ["STATS", "RedisStats", "turn"]

# Remove the entries ARGV names (field, sha1 of the value refused) still holding that value:
# refused counts, which their instance (if any) writes anew at its next tick; one written
# since is left alone (a digest, not the value: one refused may be megabytes)
_DROP_REFUSED = Script("""
local n = 0
for i = 1, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and redis.sha1hex(v) == ARGV[i + 1] then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n
""")

# KEYS[1]: a counts hash. ARGV[1]: the budget, ARGV[2]: the cursor, ARGV[3..]: the names
# known. -> {entries in all, next cursor ('0': whole), field, value, ...}
STATS = Script(bounded_read())


async def turn(i: int) -> None:
    """Let the loop (the data plane) run every so many entries of a hash read whole: whoever
    can write to the store can fill it with hundreds of thousands of entries to refuse."""
    if i and i % 2048 == 0:
        await asyncio.sleep(0)


class RedisStats(RedisLink):
    #: the names the last fleet read listed (redisaux.py): their counts are read by name
    _listed: tuple[str, ...] = ()
    #: per counts hash: where the next bounded read of it starts (HSCAN's cursor), the
    #: instances this store wrote counts for or read verified at the last read (read by
    #: name: one met once by the scan is not lost again), and the entries left unread
    _stats_at: dict[str, str] | None = None
    _stats_own: dict[str, set[str]] | None = None
    _stats_named: dict[str, tuple[str, ...]] | None = None
    stats_flooded: dict[str, int] | None = None
    #: per counts hash: the entries of other keys left in it (keptcounts.py)
    _stats_kept: dict[str, KeptCounts] | None = None

    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        await self._call("HSET", f"{self.k_stats}:{route}", instance,
                         self._sealed("stats", f"{route}\x00{instance}", blob))
        if self._stats_own is None:
            self._stats_own = {}
        self._stats_own.setdefault(route, set()).add(instance)

    async def drop_stats(self, route: str, instances: list[str]) -> None:
        if instances:
            await self._call("HDEL", f"{self.k_stats}:{route}", *instances)

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        """Every instance's counts that verify (a flooded hash: those of the instances known
        and of a bounded step of the rest; see the module docstring). An entry refused
        (forged, or over MAX_DOC_BYTES: not verified) is removed once read, while still as
        read: left, it was read, and its MAC computed, at every analysis tick, for good."""
        key = f"{self.k_stats}:{route}"
        at = self._stats_at if self._stats_at is not None else {}
        self._stats_at = at
        own = (self._stats_own or {}).get(route, set())
        named = self._stats_named if self._stats_named is not None else {}
        self._stats_named = named
        known = sorted({*self._listed, *own, *named.get(route, ())})
        if self._stats_kept is None:
            self._stats_kept = {}
        kept = self._stats_kept.setdefault(route, KeptCounts())
        total, cursor, flat = await self._script(
            STATS, [key], [str(SCAN_BUDGET), at.get(route, "0"), *known])
        out, refused, seen, good = [], [], set(), []
        now = time.monotonic()
        for i in range(0, len(flat), 2):
            await turn(i)
            inst, v = flat[i], flat[i + 1]
            if inst in seen:
                continue  # (a known one the scan met too)
            seen.add(inst)
            digest, late = None, None
            if len(v) > MAX_DOC_BYTES:
                self.on_unverified("stats", f"{len(v)} bytes, over the {MAX_DOC_BYTES}-byte "
                                            "limit (not read)", None)
                blob = None
            else:
                if kept.holds(inst):  # (another key's, counted once: keptcounts.py)
                    digest = hashlib.sha1(v).hexdigest()
                    verdict = kept.still(inst, digest, now)
                    if verdict is not None:
                        if verdict is False:  # (a left-over: unchanged for KEPT_FOR)
                            refused += [inst, digest]
                        continue
                    late = rewritten(self.keys, v)  # (a retired key's, written again)
                    if late is not None:
                        self.on_unverified("stats", late, None, "unknown_key_id")
                blob = None if late is not None else self._opened(
                    "stats", f"{route}\x00{inst.decode('utf-8', 'replace')}", v, "stats")
            if blob is None:
                digest = digest or hashlib.sha1(v).hexdigest()
                if len(v) > MAX_DOC_BYTES or not v.startswith(MAGIC) or prunable(
                        v[len(MAGIC):], self.keys) or not kept.keep(inst, digest, now):
                    refused += [inst, digest]
            else:
                out.append(blob)
                good.append(inst.decode("utf-8", "replace"))
        named[route] = tuple(sorted(good))[:MAX_INSTANCES]
        at[route] = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self.stats_flooded is None:
            self.stats_flooded = {}
        left = int(total) - len(seen) if int(total) > SCAN_BUDGET else 0
        if int(total) <= SCAN_BUDGET:  # (read whole: what it no longer holds is gone)
            kept.only(seen)
        if left > 0:
            self.stats_flooded[route] = left
        else:
            self.stats_flooded.pop(route, None)
        if refused:  # (a cleanup: the read stands whether it succeeds or not)
            with contextlib.suppress(StateError):
                await self._script(_DROP_REFUSED, [key], refused)
        return out
