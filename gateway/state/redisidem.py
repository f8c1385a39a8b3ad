"""The redis store's idempotency records, `<p>:idem:<key>`: claims (a write with this key
is running: a lease, renewed and released only by its holder) and answers, each signed
with its expiry. A record we did not write, or one past the expiry signed into it, is
replaced, never answered from. A base of `RedisRecords` (redisaux.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.state.redislink import OWN, RedisLink, Script
from gateway.state.replyshape import integer, shaped, text

__all__ = ["CLOCK_SKEW", "RedisIdempotency"]

# Claim an idempotency key: nil when claimed, else the record already there.
_CLAIM = Script(OWN + """
own(KEYS[1], 'string')
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
""")

# Replace (ARGV[2]; '' deletes) the value still ARGV[1]: 1 when done
_SWAP = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
""")

_REPLACE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
""")


#: the signed expiry (unix time) inside an idempotency record: a genuine record put back
#: after its TTL removed it is not answered from
_EXPIRES = "_expires"

#: how far two instances' clocks (and the store's) may disagree: a heartbeat signed longer
#: than this before the store's time is a replay (redisaux.py); an idempotency record is
#: taken as put back only this long past its signed expiry. (Judged by the reader's clock
#: alone, a 15 s claim signed by an instance whose clock is behind ours was "expired" here:
#: a tamper alarm for nothing, and a retry that ran the write again while it still ran.)
CLOCK_SKEW = 300.0


def _held(what: str, reply: Any) -> bytes | None:
    """A record's answer (the claim's, GET's): the record held, or nil. An integer or an
    array raised TypeError in the record's opening (a 500 for a write with a key)."""
    return shaped(what, reply, text(reply, nil=True), "nil or the record held")


def _swapped(reply: Any) -> bool:
    """_SWAP's 1 (done) or 0: `bool(b'OK')` took a mangled answer for a swap made."""
    return shaped("the idempotency swap", reply, reply in (0, 1) and integer(reply),
                  "0 or 1") == 1


class RedisIdempotency(RedisLink):
    clock: Callable[[], float] = staticmethod(time.time)

    # ------------------------------------------------------------------ idempotency

    def _idem_sealed(self, key: str, record: dict[str, Any], ttl: float) -> bytes:
        return self._sealed("idem", key, {**record, _EXPIRES: self.clock() + ttl})

    def _idem_opened(self, key: str, raw: bytes) -> dict[str, Any] | None:
        record = self._opened("idem", key, raw, "idempotency")
        if record is None:
            return None
        expires = record.pop(_EXPIRES, None)
        if not isinstance(expires, (int, float)) or expires <= self.clock() - CLOCK_SKEW:
            self.on_unverified("idempotency", "a record past its signed expiry (put back "
                                              "after it expired)", None)
            return None
        return record

    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None:
        k = f"{self.k_idem}:{key}"
        sealed = self._idem_sealed(key, record, ttl)
        for _ in range(3):
            raw = _held("the idempotency claim", await self._script(
                _CLAIM, [k], [sealed, str(int(ttl * 1000))]))
            if raw is None:
                return None
            existing = self._idem_opened(key, raw)
            if existing is not None:
                return existing
            # a record we did not write (or an expired one): never answer from it; replace
            # it (if unchanged)
            done = await self._script(_REPLACE, [k], [raw, sealed, str(int(ttl * 1000))])
            shaped("the idempotency replace", done, done == 1 and integer(done), "1")
            if _held("GET", await self._call("GET", k)) == sealed:
                return None
        return None

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None:
        done = await self._call("SET", f"{self.k_idem}:{key}",
                                self._idem_sealed(key, record, ttl), "PX", int(ttl * 1000))
        shaped("SET", done, done == b"OK", "OK")

    async def _idem_swap(self, key: str, mine: dict[str, Any], new: bytes, ttl: float) -> bool:
        """Replace the key's record (`new`; b"": delete) only while it is `mine`."""
        k = f"{self.k_idem}:{key}"
        raw = _held("GET", await self._call("GET", k))
        if raw is None or self._idem_opened(key, raw) != mine:
            return False
        return _swapped(await self._script(_SWAP, [k], [raw, new, str(max(1, int(ttl * 1000)))]))

    async def idem_settle(self, key: str, record: dict[str, Any], ttl: float) -> bool:
        """Write `record` (a write's answer) only while the key's record is still held by
        `record["holder"]`: a claim that lapsed and was taken by a retry keeps the retry's."""
        k = f"{self.k_idem}:{key}"
        raw = _held("GET", await self._call("GET", k))
        held = None if raw is None else self._idem_opened(key, raw)
        if raw is None or held is None or held.get("holder") != record.get("holder"):
            return False
        return _swapped(await self._script(_SWAP, [k], [raw, self._idem_sealed(key, record, ttl),
                                                        str(max(1, int(ttl * 1000)))]))

    async def idem_take(self, key: str, mine: dict[str, Any], record: dict[str, Any],
                        ttl: float) -> bool:
        return await self._idem_swap(key, mine, self._idem_sealed(key, record, ttl), ttl)

    async def idem_renew(self, key: str, record: dict[str, Any], ttl: float) -> bool:
        return await self._idem_swap(key, record, self._idem_sealed(key, record, ttl), ttl)

    async def idem_release(self, key: str, mine: dict[str, Any] | None = None) -> None:
        if mine is None:
            n = await self._call("DEL", f"{self.k_idem}:{key}")
            shaped("DEL", n, integer(n), "a count")
        else:
            await self._idem_swap(key, mine, b"", 0.0)
