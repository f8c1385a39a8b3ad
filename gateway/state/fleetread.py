"""Reading the redis store's fleet: the instances whose signed heartbeat is live.

Owns `FleetRead`, a base of redisaux.RedisRecords (which writes the heartbeats): the
`<p>:instances` hash read (fleetscan.LIVE: the instances listed last, and ours, by name
first, then a bounded step of the rest), each heartbeat opened and judged (its bases:
beatrecords.py, redisbeats.py), a replay or one long gone removed while still as judged
(fleetscan.DROP), refused ones pruned when the hash is flooded (fleetscan.PRUNE), a
value refused counted once, and the live instances' addresses read (fleeturls.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

from gateway.errors import StateError
from gateway.state.beatorder import MAX_INSTANCES
from gateway.state.beatrecords import signed_time
from gateway.state.fleetscan import DROP, LIVE, PRUNE, SCAN_BUDGET, prunable
from gateway.state.fleeturls import FleetUrls
from gateway.state.redisidem import CLOCK_SKEW
from gateway.state.redisstats import turn
from gateway.state.refusedonce import RefusedOnce
from gateway.state.replyshape import digits, flat_pairs, integer, shaped
from gateway.state.retiredkeys import after_retirement
from gateway.state.store import Ack

__all__ = ["FleetRead"]


class FleetRead(FleetUrls):
    #: our newest heartbeat as published, and the ack it says (redisaux.py writes it):
    #: its echo on the acks channel is not verified again (redis.py); the fleet read
    #: reads our instance by name first
    _own_ack: tuple[bytes, Ack] | None = None
    #: the fleet's lease (s; state.instance_lease, set by the caller): bounds how old a
    #: heartbeat redis runs may be (redisaux `_max_age_ms`); None: the last fleet read's,
    #: if any
    beat_lease: float | None = None
    #: the heartbeats the last fleet read refused (replaced at each read)
    _refused_beats: RefusedOnce | None = None
    #: where the next bounded read of a flooded heartbeats / urls hash starts (HSCAN's
    #: cursor; fleetscan.py), and the names listed at the last read (read first, by name)
    _scan_at = "0"
    _listed: tuple[str, ...] = ()
    #: heartbeats the last fleet read left unread (over SCAN_BUDGET: a flooded hash)
    flooded = 0


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
