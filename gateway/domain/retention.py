"""Audit retention: which of the oldest events a trim removes, and its checkpoint event.

Pure: `decide_trim` gets the whole trail as read (oldest first), the head the signed state
anchors, the audit keys and the policy, and answers how many events to remove and the
checkpoint (`audit.trim`, domain/auditcut.py) to append in the same atomic step, or why
nothing is removed. A trim never hides a break (the trail must verify whole, with the
head and the keys, before anything is removed), never removes the newest MIN_KEEP events
or anything past the anchored head, never removes the head a kept re-seed names as its
instance's (`audit verify` checks that one is in the trail), nor an event this
instance's audit mirror has not copied yet, and removes at most
TRIM_BATCH events at once (one redis script: it must not hold up the store for long).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, verify_trail
from gateway.domain.auditcut import TRIM_ACTION, TRIM_ACTOR

__all__ = ["MIN_KEEP", "TRIM_BATCH", "Decide", "Due", "Retention", "TrimDecision",
           "decide_trim"]

#: a trim always keeps at least this many events (the newest): enough context for an
#: incident, and more than a store that lost its trail holds (reseed.py's FRESH_TRAIL)
MIN_KEEP = 100
#: the most events one trim removes; the next trim goes on
TRIM_BATCH = 10_000


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


#: (the whole trail, oldest first; the head the verified document anchors) → the decision
#: (a store's `audit_trim` reads both under its lock or in one script, and asks this)
Decide = Callable[[list[dict[str, Any]], str | None], TrimDecision]
#: (how many events the trail holds, its oldest event or None) → whether to read it whole
Due = Callable[[int, dict[str, Any] | None], bool]


def _iso(t: float) -> str:
    g = time.gmtime(int(t))
    return (f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}T{g.tm_hour:02d}:{g.tm_min:02d}:"
            f"{g.tm_sec:02d}.000Z")


def _wanted(events: Sequence[dict[str, Any]], policy: Retention, now: float) -> int:
    n = len(events)
    k = n - policy.max_events if policy.max_events is not None else 0
    if policy.max_age is not None:
        cutoff = _iso(now - policy.max_age)
        old = 0
        for ev in events:  # (utc_now's fixed-width form: strings compare as times)
            t = ev.get("time")
            if not isinstance(t, str) or len(t) != len(cutoff) or t >= cutoff:
                break
            old += 1
        k = max(k, old)
    return max(0, min(k, n - MIN_KEEP, TRIM_BATCH))


def _keep_anchors(events: Sequence[dict[str, Any]], k: int) -> int:
    """`k` lowered until no kept re-seed names as its instance's head an event removed."""
    index = {ev.get("hash"): i for i, ev in enumerate(events)}
    moved = True
    while moved and k > 0:
        moved = False
        for ev in events[k:]:
            anchored = ev.get("anchored_head")
            at = index.get(anchored) if ev.get("action") == "state.reseed" else None
            if isinstance(at, int) and at < k:
                k, moved = at, True
                break
    return k


def decide_trim(events: Sequence[dict[str, Any]], head: str | None,
                keys: Mapping[str, bytes], policy: Retention, now: float,
                copied: str | None = None) -> TrimDecision:
    """`copied`: the hash of the last event this instance's audit mirror holds (GENESIS:
    none yet): nothing after it is removed (the mirror could no longer continue)."""
    if not head or head == GENESIS:
        return TrimDecision(0, None, "no signed state anchors the trail's head")
    k = _keep_anchors(events, _wanted(events, policy, now))
    at = -1 if copied == GENESIS or (events and events[0].get("prev_hash") == copied) \
        else next((i for i, ev in enumerate(events) if ev.get("hash") == copied), None)
    if at is not None and at + 1 < k:
        k = at + 1
    if k <= 0:
        return TrimDecision(0, None, "nothing to remove")
    r = verify_trail(events, head, keys)
    if r.brk is not None:
        return TrimDecision(0, None, f"the trail does not verify (event #{r.brk.index}, "
                                     f"{r.brk.event_id}: {r.brk.problem}): nothing is "
                                     "removed, so that the break stays visible", broken=True)
    gone, last = events[:k], events[k - 1]
    why = policy.reason or "retention: " + ", ".join(
        ([f"max_events {policy.max_events}"] if policy.max_events is not None else [])
        + ([f"max_age {policy.max_age:g}s"] if policy.max_age is not None else []))
    draft = AuditDraft(
        actor=TRIM_ACTOR, action=TRIM_ACTION, target={"trail": "audit"}, reason=why,
        before={"events": len(events), "oldest": {"id": events[0].get("id"),
                                                  "time": events[0].get("time")}},
        after={"removed": k, "kept": len(events) - k, "from": gone[0].get("time"),
               "to": last.get("time"), "starts_after": r.trimmed,
               "last_removed": {"id": last.get("id"), "hash": last.get("hash"),
                                "time": last.get("time")}})
    return TrimDecision(k, draft)
