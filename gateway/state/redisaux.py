"""The redis store's side stores: heartbeats (acks), idempotency records, analysis counts.

Owns `<p>:instances` (instance → "server-ms <signed heartbeat>"), the `<p>:acks` channel's
messages (the same signed heartbeat) and `<p>:instances:urls` (instance → "kid mac <json>",
the signed addresses it listens on, for drills); `<p>:idem:<key>` and `<p>:stats:<route>`
through its bases. A
heartbeat is "kid mac generation wall-ms config instance", signed over all but its key id:
without the key nobody can make an instance look as if it applied a generation, or make
one up. A record that does not verify is reported and never used. Idempotency records: the
RedisIdempotency base (redisidem.py); analysis counts: the RedisStats base (redisstats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from gateway.errors import StateError
from gateway.log import event
from gateway.state.beatorder import NewestBeats, pushed_replay
from gateway.state.redisidem import CLOCK_SKEW, RedisIdempotency
from gateway.state.redislink import OWN, Script
from gateway.state.redisstats import RedisStats, turn
from gateway.state.signing import Unverified, cause_of
from gateway.state.store import Ack

__all__ = ["MAX_ACK_BYTES", "RedisRecords"]

log = logging.getLogger("killgate.state")

_HEARTBEAT = Script(OWN + """
own(KEYS[1], 'hash'); own(KEYS[2], 'hash')
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ms .. ' ' .. ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return ms
""")

_LIVE = Script("""
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {ms, redis.call('HGETALL', KEYS[1])}
""")

# Remove the addresses (KEYS[2]) of the instances in ARGV that have no heartbeat (KEYS[1]):
# the heartbeat script writes both at once, and every removal takes both; so only a forgery
# is left alone, read whole at every fleet read for good (checked here, atomically: an
# instance whose first heartbeat landed since the caller's read keeps its addresses)
_ORPHANS = Script("""
local n = 0
for _, f in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], f) == 0 then n = n + redis.call('HDEL', KEYS[2], f) end
end
return n
""")

# Remove the heartbeat (and addresses) of instance ARGV[1] only while it is the one this
# process wrote last (ARGV[2], after the server's stamp): a stopping instance's removal
# that lands after a restarted one of the same name wrote its own leaves that one alone
_LEAVE = Script("""
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local i = string.find(v, ' ', 1, true)
  if not i or string.sub(v, i + 1) ~= ARGV[2] then return 0 end
end
redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1])
return 1
""")

#: a heartbeat longer than this is refused unread. A real one is a few hundred bytes (key
#: id, MAC, generation, time, config digest, a host name of at most 64); the acks channel
#: is read on the loop the data plane runs on, and a flood of 8 MB forged acks naming the
#: real key id had their MACs computed there: a serial client's p99 went from 4 to 20 ms
MAX_ACK_BYTES = 4096
# (CLOCK_SKEW, redisidem.py: how far an instance's clock may be behind the store's: a
# heartbeat signed longer than this (and 10 leases) before the store's time is a replay,
# left out of the fleet (its stamp of arrival is written beside it, unsigned: a replay
# carries a fresh one))

#: how often the store's clock being off is logged again while it stays off
CLOCK_LOG_INTERVAL = 60.0


def _signed_ms(record: bytes) -> int | None:
    """A verified heartbeat's signed time (ms; None when unread)."""
    parts = record.split(b" ", 4)
    wall = parts[3] if len(parts) > 3 else b""
    return int(wall) if wall.isdigit() and len(wall) <= 18 else None


class RedisRecords(RedisIdempotency, RedisStats):
    #: our newest heartbeat as published, and the ack it says: its echo on the acks
    #: channel is not verified again (redis.py)
    _own_ack: tuple[bytes, Ack] | None = None
    #: heartbeats go out one at a time, in the order signed (made at the first)
    _beat_lock: asyncio.Lock | None = None
    #: the signed time of our last heartbeat (ms): the next is signed later
    _last_wall = 0
    #: the store's clock minus ours (s), as measured at the last fleet read
    store_skew_s = 0.0
    _skew_logged = -1e9
    #: the newest heartbeat read from each instance (beatorder.py): replays bounded by the
    #: store's clock, whatever ours says (made at the first fleet read)
    _newest: NewestBeats | None = None
    #: the newest ack pushed by each instance, first read at this process's monotonic
    #: time: a genuine ack PUBLISHed again (anyone who can write to redis) is refused
    _newest_pushed: NewestBeats | None = None
    #: the lease the fleet was last read with (s; None before): bounds a pushed ack's age
    _lease: float | None = None

    # ------------------------------------------------------------------ heartbeats

    def _open_ack(self, raw: bytes, kind: str, field: bytes | None = None) -> Ack | None:
        """A signed heartbeat, or None (reported as `kind`). One over MAX_ACK_BYTES is
        refused unread (see there)."""
        if len(raw) > MAX_ACK_BYTES:
            self.on_unverified(kind, f"{len(raw)} bytes, over the {MAX_ACK_BYTES}-byte limit "
                                     "(not read)", None)
            return None
        try:
            kid, mac, gen, wall, config, inst = raw.decode().split(" ", 5)
            if not gen.isdigit() or (field is not None and field.decode() != inst):
                raise Unverified("a malformed heartbeat")
            if self.keys.enabled:
                body = f"{inst}\x00{gen}\x00{wall}\x00{config}".encode()
                if self.keys.check(b"ack", body, kid, mac) == "previous":
                    self.on_unverified(kind, "", "previous")
        except (ValueError, UnicodeDecodeError) as exc:
            self.on_unverified(kind, str(exc), None, cause_of(exc))
            return None
        return Ack(inst, int(gen), "" if config == "-" else config)

    def _pushed_ack(self, raw: bytes) -> Ack | None:
        """An ack from the acks channel (verified, as _open_ack), or None: refused as a
        replay (reported as "ack") when it is signed no later than one of that instance
        pushed before, or, once the lease is known, longer ago than a fleet read takes a
        heartbeat for live. A replay noted as heard kept a stopped instance live (receipts
        waited for it, drills counted it) for a lease after each."""
        ack = self._open_ack(raw, "ack")
        if ack is None or not self.keys.enabled or (signed := _signed_ms(raw)) is None:
            return ack
        skew = self.store_skew_s if abs(self.store_skew_s) <= CLOCK_SKEW else 0.0
        bound = None if self._lease is None else 10 * self._lease + CLOCK_SKEW
        if self._newest_pushed is None:
            self._newest_pushed = NewestBeats()
        if why := pushed_replay(self._newest_pushed, ack.instance, signed,
                                int(time.monotonic() * 1000),
                                self.clock() + skew - signed / 1000.0, bound, CLOCK_SKEW,
                                ack.generation):
            self.on_unverified("ack", why, None)
            return None
        return ack

    async def heartbeat(self, instance: str, applied: int, config: str = "",
                        urls: dict[str, str] | None = None) -> None:
        # one at a time, each signed at least a millisecond after the one before: two
        # sent at once (the acks of a kill and its unkill, applied within a millisecond)
        # went out on two pooled connections, and the second signed could arrive first,
        # or both in one millisecond for one generation: every other instance refused one
        # as a replay and counted a forgery (the console's "value(s) refused" badge, the
        # unverified counter the shipped alert watches) where nobody had written a byte
        if self._beat_lock is None:
            self._beat_lock = asyncio.Lock()
        async with self._beat_lock:
            await self._heartbeat(instance, applied, config, urls)

    async def _heartbeat(self, instance: str, applied: int, config: str,
                         urls: dict[str, str] | None) -> None:
        now_ms = int(self.clock() * 1000)
        # (a clock stepped back further than a second is taken as it is: signing ahead of
        # it would carry a step forward, an hour's NTP correction, on for that long)
        wall_ms = self._last_wall + 1 if 0 <= self._last_wall - now_ms < 1000 else now_ms
        self._last_wall = wall_ms
        wall = str(wall_ms)
        config = config or "-"
        body = f"{instance}\x00{applied}\x00{wall}\x00{config}".encode()
        kid, mac = self.keys.sign(b"ack", body) if self.keys.enabled else ("-", "-")
        record = f"{kid} {mac} {applied} {wall} {config} {instance}"
        # the addresses apart (a heartbeat's shape stays what older instances parse)
        addr = json.dumps(urls, separators=(",", ":"), sort_keys=True) if urls else ""
        if addr:
            akid, amac = (self.keys.sign(b"urls", f"{instance}\x00{addr}".encode())
                          if self.keys.enabled else ("-", "-"))
            addr = f"{akid} {amac} {addr}"
        self._own_ack = (record.encode(), Ack(instance, applied, "" if config == "-" else config))
        await self._script(_HEARTBEAT, [self.k_instances, self.k_instances + ":urls"],
                           [instance, record, self.ch_acks, addr])

    def _open_urls(self, instance: str, raw: bytes) -> dict[str, str]:
        """An instance's signed addresses ({} when they do not verify, or are longer than
        a heartbeat may be: not read)."""
        if len(raw) > MAX_ACK_BYTES:
            self.on_unverified("heartbeat", f"addresses: {len(raw)} bytes, over the "
                                            f"{MAX_ACK_BYTES}-byte limit (not read)", None)
            return {}
        try:
            kid, mac, addr = raw.decode().split(" ", 2)
            if self.keys.enabled:
                self.keys.check(b"urls", f"{instance}\x00{addr}".encode(), kid, mac)
            got = json.loads(addr)
        except (ValueError, UnicodeDecodeError) as exc:
            self.on_unverified("heartbeat", f"addresses: {exc}", None, cause_of(exc))
            return {}
        if not isinstance(got, dict):
            return {}
        return {k: v for k, v in got.items() if k in ("data", "admin") and isinstance(v, str)}

    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        """Instances whose signed heartbeat the store saw within `lease` (server time)."""
        self._lease = lease
        before = self.clock()
        now_ms, flat = await self._script(_LIVE, [self.k_instances], [])
        # a heartbeat's signed time is judged by the store's clock; by ours when the two
        # are further apart than the skew tolerated (a store an hour ahead made every
        # instance's heartbeat, ours too, a "replay": the fleet emptied, receipts counted
        # this instance alone, and the log blamed the instances)
        judge_ms = self._judge_clock(int(now_ms), before, self.clock())
        out: dict[str, dict[str, Any]] = {}
        stale: list[bytes] = []
        for i in range(0, len(flat), 2):
            await turn(i)
            seen_s, _, record = flat[i + 1].partition(b" ")
            # (a server time has 13 digits: a longer one, forged, is no float, or no int)
            age = (int(now_ms) - int(seen_s)) / 1000.0 \
                if seen_s.isdigit() and len(seen_s) <= 18 else 1e9
            if age > 10 * lease or age < -lease:
                # (long gone; or dated in the future: the script stamps the server's time,
                # so only a forgery is, and kept it would be read at every call for good)
                stale.append(flat[i])
                continue
            ack = self._open_ack(record, "heartbeat", flat[i])
            if ack is not None and self.keys.enabled \
                    and (why := self._replayed(ack.instance, _signed_ms(record), judge_ms,
                                               int(now_ms), lease, int(seen_s),
                                               ack.generation)):
                self.on_unverified("heartbeat", why, None)
                stale.append(flat[i])
                continue
            if ack is not None and age <= lease:
                out[ack.instance] = {"generation": ack.generation, "config": ack.config,
                                     "seen_s_ago": round(age, 3)}
        if stale:
            await self._call("HDEL", self.k_instances, *stale)
            await self._call("HDEL", self.k_instances + ":urls", *stale)
        if out:
            known = set(flat[::2])
            flat = await self._call("HGETALL", self.k_instances + ":urls")
            orphans = [f for f in flat[::2] if f not in known]
            for i in range(0, len(flat), 2):
                await turn(i)
                name = flat[i].decode(errors="replace")
                if name in out:
                    out[name].update(self._open_urls(name, flat[i + 1]))
            if orphans:  # (a cleanup: the read stands whether it succeeds or not)
                with contextlib.suppress(StateError):
                    await self._script(_ORPHANS, [self.k_instances,
                                                  self.k_instances + ":urls"], orphans)
        return out

    def _replayed(self, instance: str, signed: int | None, judge_ms: int, now_ms: int,
                  lease: float, stamp_ms: int, applied: int = -1) -> str | None:
        """Why a verified heartbeat is a replay (None: it is not): signed too long before
        the clock judged by, or no later than one of that instance's read long enough ago
        by the store's clock (ours may be behind: it bounds nothing then), or stamped by
        the store (`stamp_ms`) after one at least as new was first read."""
        if signed is None:
            return None
        bound = 10 * lease + CLOCK_SKEW
        if (judge_ms - signed) / 1000.0 > bound:
            return (f"{instance!r} signed {(judge_ms - signed) / 1000.0:.0f}s before "
                    f"{self._judge_name(judge_ms, now_ms)}: a replay (or that instance's "
                    "clock is off)")
        if self._newest is None:
            self._newest = NewestBeats()
        least = self._newest.min_age_ms(instance, signed, now_ms, applied)
        if least is not None and least / 1000.0 > bound:
            return (f"{instance!r} signed at least {least / 1000.0:.0f}s before the store's "
                    "clock (no later than a heartbeat of it read that long ago): a replay "
                    "(or that instance's clock stepped back)")
        if least is not None and self._newest.written_since(instance, signed, stamp_ms,
                                                                 applied):
            return (f"{instance!r} written again after a heartbeat of it at least as new was "
                    "read: a replay (or that instance's clock stepped back)")
        # (one signed ahead of the store's clock, or ours when later, by more than the skew
        # tolerated is taken but not remembered: remembered, a heartbeat signed an hour
        # ahead made every genuine one after NTP set that clock right a "replay" for the
        # hour, deleted from the store at every read: the instance gone from the fleet,
        # receipts short, drills failing)
        if signed <= max(now_ms, judge_ms) + int(CLOCK_SKEW * 1000):
            self._newest.saw(instance, signed, now_ms, applied)
        return None

    async def live_instances(self, lease: float) -> dict[str, int]:
        return {k: v["generation"] for k, v in (await self.fleet(lease)).items()}

    def _judge_clock(self, now_ms: int, before: float, after: float) -> int:
        """The time (ms) heartbeats' signed times are judged against: the store's
        (`now_ms`), or ours when the store's is off from ours by more than CLOCK_SKEW
        (logged, with the skew measured, every CLOCK_LOG_INTERVAL while it lasts)."""
        ours_ms = int((before + after) * 500)
        self.store_skew_s = skew = (now_ms - ours_ms) / 1000.0
        if abs(skew) <= CLOCK_SKEW:
            return now_ms
        if time.monotonic() - self._skew_logged >= CLOCK_LOG_INTERVAL:
            self._skew_logged = time.monotonic()
            event(log, "state_store_clock_off", logging.ERROR, skew_s=round(skew, 1),
                  detail=f"the store's clock is {abs(skew):.0f}s "
                         f"{'ahead of' if skew > 0 else 'behind'} this instance's (measured "
                         f"at a fleet read; {CLOCK_SKEW:.0f}s tolerated): heartbeats are "
                         "judged by this instance's clock meanwhile; check the clocks (NTP) "
                         "of the store's host and this one")
        return ours_ms

    @staticmethod
    def _judge_name(judge_ms: int, now_ms: int) -> str:
        if judge_ms == now_ms:
            return "the store's clock"
        skew = (now_ms - judge_ms) / 1000.0
        return (f"this instance's clock (the store's is {abs(skew):.0f}s "
                f"{'ahead' if skew > 0 else 'behind'}: off)")

    async def leave(self, instance: str) -> None:
        """Remove our heartbeat, only if it is still the one we wrote last: a restarted
        instance of the same name may have written its own since (see _LEAVE)."""
        own = self._own_ack
        if own is None or own[1].instance != instance:
            return
        await self._script(_LEAVE, [self.k_instances, self.k_instances + ":urls"],
                           [instance, own[0]])
