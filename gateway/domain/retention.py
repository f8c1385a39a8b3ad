"""Audit retention: which of the oldest events a trim removes, and its checkpoint event.

Pure: `decide_trim` gets a window of the trail (TrimWindow: its length, its oldest events,
its newest event and newest checkpoint, its re-seeds, the head the signed state anchors,
read at once), the audit keys and the policy, and answers how many events to remove and
the checkpoint (`audit.trim`, domain/auditcut.py) to append in the same atomic step, or
why nothing is removed. A trim never hides a break (the events it removes must verify:
links, hashes, MACs, the start, up to a keyed event kept; a trail that starts at a
re-seed after a lost trail starts there, the loss said by the checkpoint; and the
newest event must be the anchored head: nothing past it), never removes the newest
MIN_KEEP events
or anything past the anchored head, never removes the head a kept re-seed names as its
instance's (`audit verify` checks that one is in the trail), nor an event this
instance's audit mirror has not copied yet, and removes at most
TRIM_BATCH events at once from a window (one redis script: it must not hold up the store
for long); from a trail read whole (the local store's), all it must at once (each trim
rewrites the whole file).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, mac_matches
from gateway.domain.auditcut import TRIM_ACTION, TRIM_ACTOR, trail_cuts, trim_cut
from gateway.domain.auditpin import pinned
from gateway.domain.auditverify import verify_trail
from gateway.domain.retentionloss import lost_at, lost_start

__all__ = ["MIN_KEEP", "TRIM_BATCH", "Decide", "Due", "Retention", "TrimDecision",
           "TrimWindow", "age_clock", "decide_trim", "trail_clock"]

#: a trim always keeps at least this many events (the newest): enough context for an
#: incident, and more than a store that lost its trail holds (reseed.py's FRESH_TRAIL)
MIN_KEEP = 100
#: the most events one trim removes (and about what it holds in memory: the oldest ones
#: are what it reads, ~3 kB each once parsed); the next trim goes on at once
TRIM_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class Retention:
    """Keep at most `max_events` events and none older than `max_age` seconds (None: no
    such bound); both at once: whichever removes more."""

    max_events: int | None = None
    max_age: float | None = None
    reason: str = ""  # said in the checkpoint (default: the policy)

    def due(self, count: int, oldest: Any, now: float) -> bool:
        """Whether a trail of `count` events whose oldest is `oldest` (an event, or None)
        is 10% past a bound: only then is it read whole and trimmed back to the bound (a
        trail trimmed at every event over would be read whole at every look)."""
        if count <= MIN_KEEP:
            return False
        if self.max_events is not None and count > self.max_events + self.max_events // 10:
            return True
        t = oldest.get("time") if isinstance(oldest, dict) else None
        return (self.max_age is not None and isinstance(t, str)
                and t < _iso(now - self.max_age * 1.1))


@dataclass(frozen=True, slots=True)
class TrimDecision:
    remove: int  # how many of the oldest events (0: none; `why` says why)
    draft: AuditDraft | None
    why: str = ""
    broken: bool = False  # nothing removed because the trail does not verify
    more: bool = False  # more is due than one trim removes at once: trim again at once


@dataclass(frozen=True, slots=True)
class TrimWindow:
    """What a trim reads of a trail (not all of it: a long one must not be held in
    memory): its length, its oldest events (at least TRIM_BATCH + 1, or all), its newest
    event, its newest checkpoint, every `state.reseed` event in it, and the head the
    signed state anchors, all read at once."""

    count: int
    oldest: Sequence[dict[str, Any]]
    newest: dict[str, Any] | None
    checkpoint: dict[str, Any] | None
    reseeds: Sequence[dict[str, Any]]
    head: str | None
    #: the most one trim removes (None: TRIM_BATCH; a trail read whole: all it must, at
    #: once, as its store rewrites the whole file at every trim)
    batch: int | None = None
    #: the store's own clock when the window was read (Unix seconds: redis TIME; None: the
    #: store has none, the local files): ages are measured by it too (see age_clock)
    clock: float | None = None
    #: the events after the checkpoint, oldest first (a trail read whole: all of them),
    #: and whether the store walked them from it to one a held key authenticates
    #: (auditpin.pin_walk): a checkpoint MAC'd under a key a rotation removed is
    #: authenticated so, by the chain (never on its hash alone)
    after_checkpoint: Sequence[dict[str, Any]] = ()
    checkpoint_pinned: bool = False

    @classmethod
    def whole(cls, events: Sequence[dict[str, Any]], head: str | None) -> TrimWindow:
        """The window of a trail read whole (the local store's)."""
        at = next((i for i in range(len(events) - 1, -1, -1)
                   if trim_cut(events[i]) is not None), None)
        return cls(len(events), events, events[-1] if events else None,
                   events[at] if at is not None else None,
                   [ev for ev in events if ev.get("action") == "state.reseed"], head,
                   len(events),
                   after_checkpoint=events[at + 1:] if at is not None else ())


#: (the window read) → the decision (a store's `audit_trim` reads the window under its
#: lock or in one script, and asks this, in a thread)
Decide = Callable[[TrimWindow], TrimDecision]
#: (how many events the trail holds, its oldest event or None, the store's clock or None)
#: → whether to read it
Due = Callable[[int, dict[str, Any] | None, float | None], bool]


def _iso(t: float) -> str:
    g = time.gmtime(int(t))
    return (f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}T{g.tm_hour:02d}:{g.tm_min:02d}:"
            f"{g.tm_sec:02d}.000Z")


def _seconds(t: Any) -> float | None:
    """An event's `time` (utc_now's form) as Unix seconds (None: not of that form)."""
    if not isinstance(t, str) or len(t) != 24 or not t.endswith("Z"):
        return None
    try:
        return calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + int(t[20:23]) / 1e3
    except ValueError:
        return None


def age_clock(w: TrimWindow, now: float) -> float:
    """The time `max_age` is measured back from: an event goes only when it is that old by
    every clock the trim can read, so a trimming instance whose clock runs ahead never
    removes events that are not old (before, to the newest MIN_KEEP). With a store clock
    (redis TIME, one for the whole fleet): the earlier of it and `now`. Without (the local
    store, whose events this host's clock dated): the earlier of `now` and the newest event
    that is not a trim checkpoint (a checkpoint is dated by the trimming clock itself); a
    trail quiet for a while keeps events that much past `max_age`, until its next event."""
    if w.clock is not None:
        return min(now, w.clock)
    tail = reversed(w.oldest) if len(w.oldest) >= w.count else (
        [w.newest] if w.newest is not None else [])
    t = trail_clock(tail)
    return now if t is None else min(now, t)


def trail_clock(newest_first: Iterable[Any]) -> float | None:
    """The time of the first event of `newest_first` that is not a trim checkpoint (None:
    none is dated): the local store's clock for `max_age` (see age_clock), and for whether
    a look is due at all (the local store's `Due` clock)."""
    for ev in newest_first:
        if isinstance(ev, dict) and ev.get("action") != TRIM_ACTION:
            t = _seconds(ev.get("time"))
            if t is not None:
                return t
    return None


def _wanted(w: TrimWindow, policy: Retention, now: float) -> tuple[int, bool]:
    """How many of the oldest events to remove, and whether more are due than that (the
    batch, or the window, held it back)."""
    k = w.count - policy.max_events if policy.max_events is not None else 0
    if policy.max_age is not None:
        cutoff = _iso(age_clock(w, now) - policy.max_age)
        old = 0
        for ev in w.oldest:  # (utc_now's fixed-width form: strings compare as times)
            t = ev.get("time")
            if not isinstance(t, str) or len(t) != len(cutoff) or t >= cutoff:
                break
            old += 1
        k = max(k, old)
    want = min(k, w.count - MIN_KEEP)
    cap = min(TRIM_BATCH if w.batch is None else w.batch, len(w.oldest) - 1)
    return max(0, min(want, cap)), want > cap


def _keep_anchors(w: TrimWindow, k: int) -> int:
    """`k` lowered until no kept re-seed names as its instance's head an event removed."""
    index = {h: i for i, ev in enumerate(w.oldest) if isinstance(h := ev.get("hash"), str)}

    def where(v: Any) -> int | None:  # (a forged entry's fields may be of any type)
        return index.get(v) if isinstance(v, str) else None

    moved = True
    while moved and k > 0:
        moved = False
        for ev in w.reseeds:
            at, me = where(ev.get("anchored_head")), where(ev.get("hash"))
            if isinstance(at, int) and at < k and (me is None or me >= k):
                k, moved = at, True
                break
    return k


def _start(w: TrimWindow, keys: Mapping[str, bytes]) -> dict[str, dict[str, Any]] | str:
    """The start the oldest event may continue (GENESIS, a re-seed's after a lost trail,
    or the newest checkpoint's cut: that checkpoint genuine, with keys), or why the
    trail's start does not verify."""
    first = w.oldest[0].get("prev_hash")
    if first == GENESIS:
        return {}
    ck = w.checkpoint
    cut = trim_cut(ck)
    # (a trail trimmed since a loss no longer holds its re-seed: with a checkpoint in the
    # trail, only its cut is a start, a kept re-seed there included)
    lost = lost_start(w.oldest[0], keys) if ck is None else None
    if lost is not None:
        return lost
    if ck is None or cut is None:
        return "its oldest event does not start the chain, and no trim checkpoint says why"
    if keys and not (w.checkpoint_pinned or pinned(ck, w.after_checkpoint, keys)):
        # (genuine under a key held, or MAC'd under one a rotation removed and pinned by
        # the chain after it to an event a held key authenticates)
        return (f"the newest trim checkpoint ({ck.get('id')}) does not verify under the "
                "audit key, nor by the chain to a later event that does")
    if first != cut:
        return (f"its oldest event does not continue the newest trim checkpoint "
                f"({ck.get('id')}): events were deleted past it")
    return trail_cuts([ck])


def decide_trim(w: TrimWindow, keys: Mapping[str, bytes], policy: Retention, now: float,
                copied: str | None = None) -> TrimDecision:
    """`copied`: the hash of the last event this instance's audit mirror holds (GENESIS:
    none yet): nothing after it is removed (the mirror could no longer continue)."""
    if not w.head or w.head == GENESIS:
        return TrimDecision(0, None, "no signed state anchors the trail's head")
    wanted, more = _wanted(w, policy, now)
    k = _keep_anchors(w, wanted)
    events = w.oldest
    at = -1 if copied == GENESIS or (events and events[0].get("prev_hash") == copied) \
        else next((i for i, ev in enumerate(events) if ev.get("hash") == copied), None)
    if at is not None and at + 1 < k:
        k = at + 1
    if 0 < k < len(events) and lost_at(events, k, k + 1, keys) is not None:
        # (the re-seed after a loss would be the first event kept: its break is the loss,
        # no tampering, but after a checkpoint no start could be said at it; the event
        # before it stays too, until the re-seed is past the bounds and goes, the loss
        # said by the checkpoint)
        k -= 1
    if k <= 0:
        return TrimDecision(0, None, "nothing to remove")
    if w.newest is None or w.newest.get("hash") != w.head:
        return _broken("its newest event is not the head the signed state anchors (events "
                       "added past it, or cut off the end)")
    start = _start(w, keys)
    if isinstance(start, str):
        return _broken(start)
    # the events removed and the first one kept, up to one a key authenticates (its MAC
    # covers its hash, which covers the links before it)
    end = next((i for i in range(k, len(events)) if not keys or mac_matches(
        keys.get(str(events[i].get("kid")), b""), events[i])), None)
    if end is None:
        return TrimDecision(0, None, "no event after the oldest ones carries a MAC under the "
                                     "audit key (written before keyed audit): not trimmed")
    # (a trail that starts at a re-seed after a loss: the re-seed, checked whole by
    # lost_start, is the start the events after it continue)
    skip = 1 if "lost_before" in start.get(str(events[0].get("hash")), {}) else 0
    r = verify_trail(events[skip:end + 1], None, keys, cuts=start)
    if r.brk is not None:
        at = r.brk.index + skip
        lost = lost_at(events, at, k, keys)
        if lost is None:
            return _broken(f"event #{at}, {r.brk.event_id}: {r.brk.problem}")
        # (a loss the trim removes whole: what follows it must verify from the re-seed on)
        r = verify_trail(events[at + 1:end + 1], None, keys, cuts=lost)
        if r.brk is not None:
            return _broken(f"event #{r.brk.index + at + 1}, {r.brk.event_id}: {r.brk.problem}")
    gone, last = events[:k], events[k - 1]
    why = policy.reason or "retention: " + ", ".join(
        ([f"max_events {policy.max_events}"] if policy.max_events is not None else [])
        + ([f"max_age {policy.max_age:g}s"] if policy.max_age is not None else []))
    draft = AuditDraft(
        actor=TRIM_ACTOR, action=TRIM_ACTION, target={"trail": "audit"}, reason=why,
        before={"events": w.count, "oldest": {"id": events[0].get("id"),
                                              "time": events[0].get("time")}},
        after={"removed": k, "kept": w.count - k, "from": gone[0].get("time"),
               "to": last.get("time"), "starts_after": r.trimmed,
               "last_removed": {"id": last.get("id"), "hash": last.get("hash"),
                                "time": last.get("time")}})
    return TrimDecision(k, draft, more=more and k == wanted)


def _broken(problem: str) -> TrimDecision:
    return TrimDecision(0, None, f"the trail does not verify ({problem}): nothing is "
                                 "removed, so that the break stays visible", broken=True)
