"""The redis store's analysis counts: `<p>:stats:<route>` (instance → its signed blob).

Owns `RedisStats` (a base of `RedisRecords`, redisaux.py): each instance's counts for a
route (canary analysis, shadow tallies) sealed with the route and instance in the MAC;
one that does not verify, or is over MAX_DOC_BYTES, is reported, never used, and removed
once read. And `turn`: a read of a whole hash lets the loop (the data plane) run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from gateway.errors import StateError
from gateway.state.redislink import RedisLink, Script
from gateway.state.store import MAX_DOC_BYTES

__all__ = ["RedisStats", "turn"]

# Remove the entries ARGV names (field, length) still of that length: refused counts, which
# their instance (if any) writes anew at its next tick; one written since is left alone
_DROP_REFUSED = Script("""
for i = 1, #ARGV, 2 do
  if redis.call('HSTRLEN', KEYS[1], ARGV[i]) == tonumber(ARGV[i + 1]) then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
""")


async def turn(i: int) -> None:
    """Let the loop (the data plane) run every so many entries of a hash read whole: whoever
    can write to the store can fill it with hundreds of thousands of entries to refuse."""
    if i and i % 2048 == 0:
        await asyncio.sleep(0)


class RedisStats(RedisLink):
    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        await self._call("HSET", f"{self.k_stats}:{route}", instance,
                         self._sealed("stats", f"{route}\x00{instance}", blob))

    async def drop_stats(self, route: str, instances: list[str]) -> None:
        if instances:
            await self._call("HDEL", f"{self.k_stats}:{route}", *instances)

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        """Every instance's counts that verify. An entry refused (forged, or over
        MAX_DOC_BYTES: not verified) is removed once read: left, it was read, and its MAC
        computed, on the loop the data plane runs on at every analysis tick, for good."""
        key = f"{self.k_stats}:{route}"
        flat = await self._call("HGETALL", key)
        out, refused = [], []
        for i, (inst, v) in enumerate(zip(flat[::2], flat[1::2], strict=True)):
            await turn(i)
            if len(v) > MAX_DOC_BYTES:
                self.on_unverified("stats", f"{len(v)} bytes, over the {MAX_DOC_BYTES}-byte "
                                            "limit (not read)", None)
                blob = None
            else:
                blob = self._opened("stats", f"{route}\x00{inst.decode('utf-8', 'replace')}",
                                    v, "stats")
            if blob is None:
                refused += [inst, str(len(v))]
            else:
                out.append(blob)
        if refused:  # (a cleanup: the read stands whether it succeeds or not)
            with contextlib.suppress(StateError):
                await self._script(_DROP_REFUSED, [key], refused)
        return out
