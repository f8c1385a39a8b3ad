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
record that does not verify is reported and never used (reading and judging one: the
RedisBeats base, redisbeats.py, which also seeds what was read from the store at the
first `open`: `_seed_places`). Idempotency records: the RedisIdempotency base (redisidem.py);
analysis counts: the RedisStats base (redisstats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.errors import StateError
from gateway.state.beatorder import MAX_INSTANCES, Place
from gateway.state.beatrecords import MAX_ACK_BYTES, signed_time
from gateway.state.fleetscan import DROP, LIVE, PRUNE, SCAN_BUDGET, prunable
from gateway.state.fleeturls import FleetUrls
from gateway.state.redisidem import CLOCK_SKEW, RedisIdempotency
from gateway.state.redislink import OWN, Script
from gateway.state.redisstats import RedisStats, turn
from gateway.state.refusedonce import RefusedOnce
from gateway.state.replyshape import digits, flat_pairs, integer, shaped
from gateway.state.retiredkeys import after_retirement
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


class RedisRecords(RedisIdempotency, RedisStats, FleetUrls):
    #: our newest heartbeat as published, and the ack it says: its echo on the acks
    #: channel is not verified again (redis.py)
    _own_ack: tuple[bytes, Ack] | None = None
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
    #: the fleet's lease (s; state.instance_lease, set by the caller): bounds how old a
    #: heartbeat redis runs may be (`_max_age_ms`); None: the last fleet read's, if any
    beat_lease: float | None = None
    #: the store's clock minus ours (s) as our last heartbeat's answer measured it
    _beat_skew: float | None = None
    #: the heartbeats the last fleet read refused (replaced at each read)
    _refused_beats: RefusedOnce | None = None
    #: where the next bounded read of a flooded heartbeats / urls hash starts (HSCAN's
    #: cursor; fleetscan.py), and the names listed at the last read (read first, by name)
    _scan_at = "0"
    _listed: tuple[str, ...] = ()
    #: heartbeats the last fleet read left unread (over SCAN_BUDGET: a flooded hash)
    flooded = 0

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

    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        """Instances whose signed heartbeat the store saw within `lease` (server time)."""
        # (the replay bounds follow the instance lease: a read asked for a longer one, the
        # console's 12 leases, set them 12 times looser until the next read)
        self._lease = live = lease if self.beat_lease is None else min(lease, self.beat_lease)
        before = self.clock()
        # (the instances listed last, and ours, read by name first: a flood cannot hide
        # them; then a bounded step of the rest: fleetscan.py)
        own = self._own_ack[1].instance if self._own_ack is not None else None
        heard, self._heard = self._heard or set(), None
        known = sorted({*self._listed, *heard, *([own] if own else [])})
        got = await self._script(LIVE, [self.k_instances],
                                 [str(SCAN_BUDGET), self._scan_at, *known])
        now_ms, total, cursor, flat = shaped(
            "the fleet read", got, type(got) is list and len(got) == 4 and integer(got[0])
            and integer(got[1]) and digits(got[2]) and flat_pairs(got[3]), "its answer")
        flooded = int(total) > SCAN_BUDGET
        # a heartbeat's signed time is judged by the store's clock; by ours when the two
        # are further apart than the skew tolerated (a store an hour ahead made every
        # instance's heartbeat, ours too, a "replay": the fleet emptied, receipts counted
        # this instance alone, and the log blamed the instances)
        judge_ms = self._judge_clock(int(now_ms), before, self.clock())
        out: dict[str, dict[str, Any]] = {}
        stale: list[str | bytes] = []  # (long gone, or replays: field, value, ...)
        prune: list[str | bytes] = []  # (refused, flooded: field, value, ...)
        seen: set[bytes] = set()
        # a value refused is counted once, not again at every read for its 10 leases ("N
        # values refused" for one: a crashed instance's heartbeat signed with a key retired
        # since, or one forged entry); written again, it is another value, counted again
        refused = RefusedOnce(self._refused_beats)
        beats: dict[str, str] = {}
        for i in range(0, len(flat), 2):
            await turn(i)
            if flat[i] in seen:
                continue  # (a known one the scan met too)
            seen.add(flat[i])
            seen_s, _, record = flat[i + 1].partition(b" ")
            # (a server time has 13 digits: a longer one, forged, is no float, or no int)
            age = (int(now_ms) - int(seen_s)) / 1000.0 \
                if seen_s.isdigit() and len(seen_s) <= 18 else 1e9
            if age > 10 * lease or age < -lease:
                # (long gone; or dated in the future: the script stamps the server's time,
                # so only a forgery is, and kept it would be read at every call for good)
                stale += (flat[i], flat[i + 1])
                continue
            if refused.still(flat[i], flat[i + 1]):
                if flooded and prunable(record, self.keys):
                    prune += (flat[i], flat[i + 1])
                continue  # (the value refused at the last read: still refused, not recounted)
            late = after_retirement(self.keys, record, int(seen_s) / 1000.0)
            if late is not None:  # (a retired key's, written long after: retiredkeys.py)
                # which instance: the SRE's next question (a pod on the old Secret)
                who = flat[i][:64].decode(errors="replace")
                self.on_unverified("heartbeat", f"instance {who!r} {late}", None,
                                   "unknown_key_id")
            ack = None if late is not None else self._open_ack(record, "heartbeat", flat[i])
            if ack is None:
                refused.add(flat[i], flat[i + 1])
                self._other_key(record, age, late is not None)
                if flooded and prunable(record, self.keys):
                    prune += (flat[i], flat[i + 1])
                continue
            if self.keys.enabled \
                    and (signed := signed_time(record)) is not None \
                    and (why := self._replayed(ack.instance, signed, judge_ms,
                                               int(now_ms), live, int(seen_s),
                                               ack.generation)):
                self.on_unverified("heartbeat", why, None)
                # (too old by our clock alone, off from the store's: refused here, not
                # removed for all: one instance's clock an hour ahead deleted every
                # genuine heartbeat at each of its reads, the fleet hidden between beats)
                bound, aged = 1000 * (10 * live + CLOCK_SKEW), self._aged(signed)
                if judge_ms - aged <= bound or int(now_ms) - aged > bound:
                    stale += (flat[i], flat[i + 1])
                continue
            if age <= lease:
                out[ack.instance] = {"generation": ack.generation, "config": ack.config,
                                     "seen_s_ago": round(age, 3)}
                beats[ack.instance] = record.split(b" ", 4)[3].decode("ascii", "replace")
        self._refused_beats = refused
        self._beat_walls = beats
        self._scan_at = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        self._listed = tuple(sorted(out))[:MAX_INSTANCES]
        self.flooded = max(0, int(total) - len(seen)) if flooded else 0
        if stale:  # (only while still as judged: fleetscan.DROP)
            await self._script(DROP, [self.k_instances, self.k_instances + ":urls"], stale)
        if prune:  # (a cleanup: the read stands whether it succeeds or not)
            with contextlib.suppress(StateError):
                await self._script(PRUNE, [self.k_instances], prune)
        if out:
            await self._urls(out, seen)
        return out

    async def live_instances(self, lease: float) -> dict[str, int]:
        return {k: v["generation"] for k, v in (await self.fleet(lease)).items()}

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
