"""The redis store's side stores: heartbeats (acks), idempotency records, analysis counts.

Owns `<p>:instances` (instance → "server-ms <signed heartbeat>"), the `<p>:acks` channel's
messages (the same signed heartbeat) and `<p>:instances:urls` (instance → "kid mac <json>",
the signed addresses it listens on, for drills); `<p>:idem:<key>` and `<p>:stats:<route>`
through its bases. A
heartbeat is "kid mac generation time config instance", signed over all but its key id:
without the key nobody can make an instance look as if it applied a generation, or make
one up; its time is "wall-ms.place" (beatorder.py's Place: this process's start, by the
store's clock, its count of heartbeats, the time since by a clock no step moves; an older
version's is "wall-ms" alone, which it still reads, unplaced; a newer version's may add
parts after the place, which it places by its first five: beatorder.split_time). A
record that does not verify is reported and never used (reading the fleet: the FleetRead
base, fleetread.py; opening and judging one: its bases, beatrecords.py and redisbeats.py,
which also seeds what was read from the store at the first `open`: `_seed_places`).
Idempotency records: the RedisIdempotency base (redisidem.py); analysis counts: the
RedisStats base (redisstats.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable

from gateway.state.beatorder import Place
from gateway.state.beatrecords import MAX_ACK_BYTES
from gateway.state.fleetread import FleetRead
from gateway.state.redisidem import CLOCK_SKEW, RedisIdempotency
from gateway.state.redislink import OWN, Script
from gateway.state.redisstats import RedisStats
from gateway.state.replyshape import digits, integer, shaped
from gateway.state.store import Ack

__all__ = ["MAX_ACK_BYTES", "RedisRecords"]

_HEARTBEAT = Script(OWN + """
own(KEYS[1], 'hash'); own(KEYS[2], 'hash')
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- ARGV[5], ARGV[6]: how long ago (ms, by this clock) a heartbeat signed at ARGV[6] may
-- be signed: run later (redis stalled with it in a socket), it is not written at all
if ARGV[5] ~= '' and ms - tonumber(ARGV[6]) > tonumber(ARGV[5]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ms .. ' ' .. ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
redis.pcall('PUBLISH', ARGV[3], ARGV[2])  -- (written even if refused: rediscommit.py)
return ms
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


def _boottime() -> float:
    """Seconds by a clock that no step of the wall clock moves, and that counts a
    suspended host's time (CLOCK_BOOTTIME; elsewhere the monotonic clock)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class RedisRecords(RedisIdempotency, RedisStats, FleetRead):
    #: heartbeats go out one at a time, in the order signed (made at the first)
    _beat_lock: asyncio.Lock | None = None
    #: the signed time of our last heartbeat (ms): the next is signed later
    _last_wall = 0
    #: this process's step-free clock (s), which heartbeats' places count from
    since: Callable[[], float] = staticmethod(_boottime if hasattr(time, "CLOCK_BOOTTIME")
                                              else time.monotonic)
    #: this process's start (the store's time when it first beat, a tag, `since` then)
    #: and its count of heartbeats signed: the place of the next
    _boot: tuple[int, str, float] | None = None
    _beats = 0
    #: the store's clock minus ours (s) as our last heartbeat's answer measured it
    _beat_skew: float | None = None

    # ------------------------------------------------------------------ heartbeats

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
        # (a clock stepped back by NTP is signed after the last heartbeat while it stands
        # behind it by no more than the skew tolerated: every other instance remembers a
        # heartbeat signed up to that far ahead of its clock (redisbeats.py), and took the
        # genuine ones signed earlier, for as long as the step, for replays, counted as
        # tamper; a step further back, an hour's correction, is taken as it is: signing
        # ahead would carry it on for the hour, and nobody remembered one that far ahead)
        behind = self._last_wall - now_ms
        wall_ms = self._last_wall + 1 if 0 <= behind < CLOCK_SKEW * 1000 else now_ms
        self._last_wall = wall_ms
        place = await self._next_place()
        wall = f"{wall_ms}.{place.text()}"
        # (its age as the others judge it: from the younger of its signed time and its
        # place's, which no step of our clock moves: a clock stepped back an hour did not
        # make every heartbeat too old to write, for good)
        signed = max(wall_ms, place.at_ms)
        config = config or "-"
        body = f"{instance}\x00{applied}\x00{wall}\x00{config}".encode()
        kid, mac = self.keys.sign(b"ack", body) if self.keys.enabled else ("-", "-")
        record = f"{kid} {mac} {applied} {wall} {config} {instance}"
        # the addresses apart (a heartbeat's shape stays what older instances parse), with
        # the key ids this instance trusts, the one it signs with first: whether every
        # instance holds the new key yet (a rotation's step 2 safe) is read there
        # (/v1/fleet `key_ids`; an older reader keeps only the addresses)
        # and the heartbeat it goes with (`beat`: key ids of an older record put back are
        # not read, review revtrail)
        if self.keys.enabled and self.keys.current is not None:
            urls = {**(urls or {}), "beat": wall, "key_ids": " ".join(
                k.kid for k in (self.keys.current, self.keys.previous) if k is not None)}
        addr = json.dumps(urls, separators=(",", ":"), sort_keys=True) if urls else ""
        if addr:
            akid, amac = (self.keys.sign(b"urls", f"{instance}\x00{addr}".encode())
                          if self.keys.enabled else ("-", "-"))
            addr = f"{akid} {amac} {addr}"
        self._own_ack = (record.encode(), Ack(instance, applied, "" if config == "-" else config))
        before = self.clock()
        ms = await self._script(_HEARTBEAT, [self.k_instances, self.k_instances + ":urls"],
                                [instance, record, self.ch_acks, addr, self._max_age_ms(),
                                 str(signed)])
        after = self.clock()  # (any other answer than a time or -1: no heartbeat written)
        shaped("the heartbeat", ms, integer(ms) and (ms > 0 or ms == -1), "a time (ms) or -1")
        if ms > 0 and 0 <= after - before < 1.0:
            self._beat_skew = ms / 1000.0 - (before + after) / 2

    def _max_age_ms(self) -> str:
        """How long before the store's clock a heartbeat may be signed when redis runs it
        ("": no bound): what every other instance takes for live (redisbeats.py). One run
        later (redis stalled past our timeout with it in a socket, then went on) was
        written and published, and every other instance counted a genuine heartbeat as a
        replay: a tamper alarm nobody caused. Unbounded until a fleet read has told the
        lease, before a heartbeat has measured the store's clock, and while that is off from
        ours by more than the skew tolerated (the others judge by their own clocks then:
        the store's would drop every one)."""
        lease = self.beat_lease if self.beat_lease is not None else self._lease
        if lease is None or self._beat_skew is None or abs(self._beat_skew) > CLOCK_SKEW:
            return ""
        return str(int((10 * lease + CLOCK_SKEW) * 1000))

    async def _next_place(self) -> Place:
        """The place of our next heartbeat (the store's clock is read once, at the first:
        a clock of ours stepped back since a restart must not place the new start before
        the old; the time since by `since`)."""
        if self._boot is None:
            t = await self._call("TIME")
            sec, usec = shaped("TIME", t, type(t) is list and len(t) == 2
                               and all(digits(v) for v in t), "[seconds, microseconds]")
            self._boot = (int(sec) * 1000 + int(usec) // 1000, secrets.token_hex(4),
                          self.since())
        boot_ms, tag, t0 = self._boot
        self._beats += 1
        return Place(boot_ms, tag, self._beats, max(0, int((self.since() - t0) * 1000)))

    def stopping(self) -> None:
        """(Nothing to do: a heartbeat waits for redis at most command_timeout.)"""

    async def leave(self, instance: str) -> None:
        """Remove our heartbeat, only if it is still the one we wrote last: a restarted
        instance of the same name may have written its own since (see _LEAVE)."""
        own = self._own_ack
        if own is None or own[1].instance != instance:
            return
        await self._script(_LEAVE, [self.k_instances, self.k_instances + ":urls"],
                           [instance, own[0]])
