"""Whether to believe the redis store's heartbeats: replays, and the clock they are judged by.

Owns `RedisBeats`, a base of `RedisRecords` (redisaux.py, which writes and reads the
records), on `BeatRecords` (beatrecords.py, which opens and verifies one): a verified
heartbeat refused as a replay when signed too long before the clock it is judged by, or
placed no later than one of that instance's read before (beatorder.py: by its place among
its process's heartbeats; an older version's by its signed time); and that clock: the
store's, or ours when the two are further apart than CLOCK_SKEW (logged). Its redis
calls: reading the heartbeats at the first `open`, their places remembered
(`_seed_places`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.log import event
from gateway.state.beatorder import (
    MAX_INSTANCES,
    NewestBeats,
    NewestPlaces,
    Place,
    pushed_replay,
)
from gateway.state.beatrecords import BeatRecords, signed_time
from gateway.state.redisidem import CLOCK_SKEW
from gateway.state.redisstats import turn
from gateway.state.replyshape import flat_pairs, integer, shaped
from gateway.state.store import Ack

__all__ = ["CLOCK_LOG_INTERVAL", "RedisBeats"]

log = logging.getLogger("killgate.state")

# (CLOCK_SKEW, redisidem.py: how far an instance's clock may be behind the store's: a
# heartbeat signed longer than this (and 10 leases) before the store's time is a replay,
# left out of the fleet (its stamp of arrival is written beside it, unsigned: a replay
# carries a fresh one))

#: how often the store's clock being off is logged again while it stays off
CLOCK_LOG_INTERVAL = 60.0


class RedisBeats(BeatRecords):
    clock: Callable[[], float]  # (redisidem.py's: the wall clock, replaced by tests)
    #: the store's clock minus ours (s), as measured at the last fleet read
    store_skew_s = 0.0
    _skew_logged = -1e9
    #: the newest place read of each instance in the store, and pushed on the acks channel
    #: (beatorder.py; made at the first read, or seeded: `_seed_places`)
    _places: NewestPlaces | None = None
    _pushed_places: NewestPlaces | None = None
    _seeded = False  # (`_seed_places` done)
    #: an older version's heartbeats (no place): the newest read from each instance,
    #: replays bounded by the store's clock, whatever ours says; and the newest pushed,
    #: first read at this process's monotonic time
    _newest: NewestBeats | None = None
    _newest_pushed: NewestBeats | None = None
    #: the lease the fleet was last read with (s; None before): bounds a pushed ack's age
    _lease: float | None = None

    def _memories(self) -> tuple[NewestPlaces, NewestPlaces]:
        if self._places is None:
            self._places = NewestPlaces()
        if self._pushed_places is None:
            self._pushed_places = NewestPlaces()
        return self._places, self._pushed_places

    async def _seed_places(self) -> None:
        """Remember the places of the heartbeats the store holds (verified; not reported:
        the fleet read judges them), as if read: a capture of one put back after is
        refused, and pushed again, too (pushed: one place earlier, so its genuine push, in
        flight as they were read, is still taken). Once per process (what is read later
        is remembered across reconnects); not over MAX_INSTANCES heartbeats (a hash
        flooded with forgeries: read whole at each start, a reply of megabytes missed the
        command timeout, and each reconnect failed on it)."""
        if self._seeded or not self.keys.enabled:
            return
        n = await self._call("HLEN", self.k_instances)
        if shaped("HLEN", n, integer(n), "a count") > MAX_INSTANCES:
            self._seeded = True  # (the fleet read reports them)
            return
        flat = await self._call("HGETALL", self.k_instances)
        shaped("HGETALL", flat, flat_pairs(flat), "fields and values")
        places, pushed = self._memories()
        for i in range(0, len(flat), 2):
            await turn(i)
            seen_s, _, record = flat[i + 1].partition(b" ")
            if not seen_s.isdigit() or len(seen_s) > 18:
                continue
            got = signed_time(record)
            if got is None or got[1] is None or self._open_ack(record, None, flat[i]) is None:
                continue
            name, place = flat[i].decode(), got[1]
            places.saw(name, place, int(seen_s))
            if place.seq > 0:
                pushed.saw(name, Place(place.boot_ms, place.tag, place.seq - 1,
                                       place.since_ms), 0)
        self._seeded = True

    def _pushed_ack(self, raw: bytes) -> Ack | None:
        """An ack from the acks channel (verified, as _open_ack), or None: refused as a
        replay (reported as "ack") when it is placed (or signed) no later than one of
        that instance pushed before, or, once the lease is known, signed longer ago than
        a fleet read takes a heartbeat for live. A replay noted as heard kept a stopped
        instance live (receipts waited for it, drills counted it) for a lease after each."""
        ack = self._open_ack(raw, "ack")
        if ack is None or not self.keys.enabled or (got := signed_time(raw)) is None:
            return ack
        signed, place = got
        if place is not None:  # (aged by the younger of what its time and place say)
            signed = max(signed, place.at_ms)
        skew = self.store_skew_s if abs(self.store_skew_s) <= CLOCK_SKEW else 0.0
        bound = None if self._lease is None else 10 * self._lease + CLOCK_SKEW
        age_s = self.clock() + skew - signed / 1000.0
        if place is not None:
            why = (f"{ack.instance!r} signed {age_s:.0f}s ago: a replay (or that instance's "
                   "clock is off)" if bound is not None and age_s > bound else
                   self._memories()[1].pushed_replay(ack.instance, place))
        else:
            if self._newest_pushed is None:
                self._newest_pushed = NewestBeats()
            why = pushed_replay(self._newest_pushed, ack.instance, signed,
                                int(time.monotonic() * 1000), age_s, bound, CLOCK_SKEW,
                                ack.generation)
        if why:
            self.on_unverified("ack", why, None)
            return None
        return ack

    def _replayed(self, instance: str, signed: tuple[int, Place | None] | None,
                  judge_ms: int, now_ms: int, lease: float, stamp_ms: int,
                  applied: int = -1) -> str | None:
        """Why a verified stored heartbeat is a replay (None: it is not): signed too long
        before the clock judged by; or placed before one of that instance's read, or that
        one stamped again by the store (`stamp_ms`: written again). An older version's,
        by its signed time: no later than one read long enough ago by the store's clock
        (ours may be behind: it bounds nothing then), or stamped after one at least as new
        was first read."""
        if signed is None:
            return None
        bound = 10 * lease + CLOCK_SKEW
        wall, place = signed
        aged = self._aged(signed)
        if (judge_ms - aged) / 1000.0 > bound:
            return (f"{instance!r} signed {(judge_ms - aged) / 1000.0:.0f}s before "
                    f"{self._judge_name(judge_ms, now_ms)}: a replay (or that instance's "
                    "clock is off)")
        if place is not None:
            places = self._memories()[0]
            if why := places.stored_replay(instance, place, stamp_ms):
                return why
            places.saw(instance, place, stamp_ms)
            return None
        if self._newest is None:
            self._newest = NewestBeats()
        least = self._newest.min_age_ms(instance, wall, now_ms, applied)
        if least is not None and least / 1000.0 > bound:
            return (f"{instance!r} signed at least {least / 1000.0:.0f}s before the store's "
                    "clock (no later than a heartbeat of it read that long ago): a replay "
                    "(or that instance's clock stepped back)")
        if least is not None and self._newest.written_since(instance, wall, stamp_ms, applied):
            return (f"{instance!r} written again after a heartbeat of it at least as new was "
                    "read: a replay (or that instance's clock stepped back)")
        # (one signed ahead of the store's clock, or ours when later, by more than the skew
        # tolerated is taken but not remembered: remembered, a heartbeat signed an hour
        # ahead made every genuine one after NTP set that clock right a "replay" for the
        # hour, deleted from the store at every read: the instance gone from the fleet,
        # receipts short, drills failing)
        if wall <= max(now_ms, judge_ms) + int(CLOCK_SKEW * 1000):
            self._newest.saw(instance, wall, now_ms, applied)
        return None

    @staticmethod
    def _aged(signed: tuple[int, Place | None]) -> int:
        """When a heartbeat was signed, as far as its age goes (ms): placed, the younger of
        what its time and its place say (its place's time is the store's clock at its
        process's start and a step-free clock since)."""
        wall, place = signed
        return wall if place is None else max(wall, place.at_ms)

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
