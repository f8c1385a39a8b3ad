"""Reading the redis store's heartbeats: what a record says, and whether to believe it.

Owns `RedisBeats`, a base of `RedisRecords` (redisaux.py, which writes and reads the
records): a heartbeat (or an ack pushed on the acks channel) and an instance's addresses
verified against the state keys, one over MAX_ACK_BYTES refused unread; a verified one
refused as a replay when signed too long before the clock it is judged by, or placed no
later than one of that instance's read before (beatorder.py: by its place among its
process's heartbeats; an older version's by its signed time); and that clock: the
store's, or ours when the two are further apart than CLOCK_SKEW (logged). A record that
does not verify is reported (`on_unverified`) and never used. Its redis calls: reading
the heartbeats at the first `open`, their places remembered (`_seed_places`).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.log import event
from gateway.state.beatorder import (
    MAX_INSTANCES,
    NewestBeats,
    NewestPlaces,
    Place,
    beat_current,
    pushed_replay,
    split_time,
)
from gateway.state.redisidem import CLOCK_SKEW
from gateway.state.redislink import RedisLink
from gateway.state.redisstats import turn
from gateway.state.refusedonce import RefusedOnce
from gateway.state.replyshape import flat_pairs, integer, shaped
from gateway.state.signing import Unverified, cause_of
from gateway.state.store import Ack

__all__ = ["CLOCK_LOG_INTERVAL", "MAX_ACK_BYTES", "RedisBeats", "signed_time"]

log = logging.getLogger("killgate.state")

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


def signed_time(record: bytes) -> tuple[int, Place | None] | None:
    """A verified heartbeat's signed time (ms) and place (None when unread)."""
    parts = record.split(b" ", 4)
    return split_time(parts[3].decode("ascii", "replace")) if len(parts) > 3 else None


def _unreported(kind: str, problem: str, which: str | None, cause: str = "other") -> None:
    return None


class RedisBeats(RedisLink):
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
    #: when (monotonic) the newest heartbeat refused for a key id we do not hold was
    #: written, by the store's stamp (FleetStore's: what KEY UNCONFIRMED is judged by)
    other_key_at: float | None = None
    #: the addresses the last fleet read refused (replaced at each read)
    _refused_urls: RefusedOnce | None = None
    #: the signed time and place of each live instance's heartbeat the last fleet read
    #: read: its addresses record names the one it was written with (`beat`)
    _beat_walls: dict[str, str] = {}

    def _open_ack(self, raw: bytes, kind: str | None, field: bytes | None = None) -> Ack | None:
        """A signed heartbeat, or None (reported as `kind`; None: not reported). One over
        MAX_ACK_BYTES is refused unread (see there)."""
        report = self.on_unverified if kind is not None else _unreported
        kind = kind or ""
        if len(raw) > MAX_ACK_BYTES:
            report(kind, f"{len(raw)} bytes, over the {MAX_ACK_BYTES}-byte limit (not read)",
                   None)
            return None
        try:
            kid, mac, gen, wall, config, inst = raw.decode().split(" ", 5)
            if not gen.isdigit() or (field is not None and field.decode() != inst):
                raise Unverified("a malformed heartbeat")
            if self.keys.enabled:
                body = f"{inst}\x00{gen}\x00{wall}\x00{config}".encode()
                if self.keys.check(b"ack", body, kid, mac) == "previous":
                    report(kind, "", "previous")
        except (ValueError, UnicodeDecodeError) as exc:
            report(kind, str(exc), None, cause_of(exc))
            return None
        return Ack(inst, int(gen), "" if config == "-" else config)

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

    async def _read_urls(self, flat: list[bytes], out: dict[str, dict[str, Any]]) -> None:
        """Add to `out` (the live instances) the addresses of `flat` (the urls hash, read
        whole) that verify. A value refused is counted once, not again at every fleet read
        while it stays as stored (one forged entry beside a live instance's heartbeat grew
        the refused count without bound: every /v1/fleet, receipt and drill read it);
        written again, it is another value, counted again."""
        refused = RefusedOnce(self._refused_urls)
        for i in range(0, len(flat), 2):
            await turn(i)
            field, raw = flat[i], flat[i + 1]
            if refused.still(field, raw):
                continue  # (still refused: not judged, nor counted, again)
            name = field.decode(errors="replace")
            if name in out:
                urls = self._open_urls(name, raw)
                if urls is None:
                    refused.add(field, raw)
                else:
                    # (key ids only from the record written with the heartbeat read: an
                    # older one put back said the keys it held then, review revtrail)
                    if not beat_current(urls.pop("beat", None), self._beat_walls.get(name)):
                        urls.pop("key_ids", None)
                    out[name].update(urls)
        self._refused_urls = refused

    def _other_key(self, record: bytes, age: float, live: bool = False) -> None:
        """A stored heartbeat written `age` seconds ago (the store's stamp) was refused:
        when its key id is none of ours, note when it was written (`other_key_at`). By its
        stamp, not when read: a dead instance's heartbeat, read until 10 leases old by an
        instance that started since, said its key unconfirmed for a lease after each start
        though nothing live signed with another key. A retired key's counts only when
        `live` (written long after the retirement: retiredkeys.after_retirement), as its
        pushed ack does: an instance signing with the old key now (a pod rolled back to the
        old Secret; or this one is the odd one out), not a left-over of the rotation."""
        kid = record.split(b" ", 1)[0].decode("ascii", "replace")
        if self.keys.enabled and not self.keys.holds(kid) \
                and (live or kid not in self.keys.retired):
            at = time.monotonic() - max(age, 0.0)
            self.other_key_at = max(at, self.other_key_at or at)

    def _open_urls(self, instance: str, raw: bytes) -> dict[str, Any] | None:
        """An instance's signed addresses and the key ids it trusts, a list (None when
        they do not verify, or are longer than a heartbeat may be: not read; reported)."""
        if len(raw) > MAX_ACK_BYTES:
            self.on_unverified("heartbeat", f"addresses: {len(raw)} bytes, over the "
                                            f"{MAX_ACK_BYTES}-byte limit (not read)", None)
            return None
        try:
            kid, mac, addr = raw.decode().split(" ", 2)
            if self.keys.enabled:
                self.keys.check(b"urls", f"{instance}\x00{addr}".encode(), kid, mac)
            got = json.loads(addr)
        except (ValueError, UnicodeDecodeError) as exc:
            self.on_unverified("heartbeat", f"addresses: {exc}", None, cause_of(exc))
            return None
        if not isinstance(got, dict):
            return {}
        return {k: v.split() if k == "key_ids" else v for k, v in got.items()
                if k in ("data", "admin", "key_ids", "beat") and isinstance(v, str)}

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
