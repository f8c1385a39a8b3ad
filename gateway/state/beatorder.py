"""Heartbeat replays told apart without this instance's clock: the newest signed time read
from each instance, and the store's time when it was first read.

A replay (an old signed heartbeat written back with a fresh arrival stamp, by anyone who
can write to the store) was judged by its signed time against a clock: the store's, or
this instance's when the two disagree by more than the skew tolerated. With this
instance's clock behind by D, replays up to D older were taken as live. What was read
before bounds it by the store's clock alone: a heartbeat signed no later than the newest
already read from that instance is at least as old as the store's time since that one was
first read, plus how much earlier it was signed. Pure bookkeeping; no I/O.

Acks pushed on the acks channel are judged the same way (`pushed_replay`), with this
process's monotonic time in place of the store's (a push carries no stamp of arrival):
one signed no later than the newest pushed by its instance is a replay.
"""

from __future__ import annotations

__all__ = ["NewestBeats", "pushed_replay"]

#: instances remembered at most (the oldest first read is forgotten first): a fleet of
#: pods with fresh names each start must not grow this for good
MAX_INSTANCES = 4096


class NewestBeats:
    def __init__(self, limit: int = MAX_INSTANCES) -> None:
        self.limit = limit
        #: instance -> (newest signed time read, ms; the store's time it was first read, ms)
        self.seen: dict[str, tuple[int, int]] = {}
        #: instance -> the generation its newest carried (two genuine ones signed in the
        #: same millisecond, a kill applied right after another, differ by it)
        self.applied: dict[str, int] = {}

    def _not_newer(self, instance: str, signed_ms: int, applied: int) -> tuple[int, int] | None:
        """The newest of `instance` when this one is no newer (signed earlier, or in the
        same millisecond for no later generation: a replay is the same record), else None."""
        prev = self.seen.get(instance)
        if prev is None or signed_ms > prev[0]:
            return None
        if signed_ms == prev[0] and applied > self.applied.get(instance, -1):
            return None
        return prev

    def min_age_ms(self, instance: str, signed_ms: int, store_ms: int,
                   applied: int = -1) -> int | None:
        """How old (ms, by the store's clock) a heartbeat of `instance` signed at
        `signed_ms` is at least, read at the store's time `store_ms`: None when it is newer
        than any read before (or none was), so nothing bounds it here."""
        prev = self._not_newer(instance, signed_ms, applied)
        if prev is None:
            return None
        newest, first_read = prev
        return max(0, store_ms - first_read) + (newest - signed_ms)

    def written_since(self, instance: str, signed_ms: int, stamp_ms: int,
                      applied: int = -1) -> bool:
        """Whether a heartbeat of `instance` signed no later than the newest read of it was
        stamped by the store (`stamp_ms`, its time of writing) after that one was first
        read: written again since, a replay (a genuine instance's later heartbeats are all
        signed later, unless its clock stepped back)."""
        prev = self._not_newer(instance, signed_ms, applied)
        return prev is not None and stamp_ms > prev[1]

    def saw(self, instance: str, signed_ms: int, store_ms: int, applied: int = -1) -> None:
        """A heartbeat taken as live: remembered when it is the newest of its instance."""
        if self._not_newer(instance, signed_ms, applied) is not None:
            return
        prev = self.seen.pop(instance, None)  # (re-inserted last: first-read order kept)
        # (the same millisecond, a later generation: the time it was first read stays)
        first = prev[1] if prev is not None and prev[0] == signed_ms else store_ms
        self.seen[instance] = (signed_ms, first)
        self.applied[instance] = applied
        while len(self.seen) > self.limit:
            self.applied.pop(gone := next(iter(self.seen)), None)
            del self.seen[gone]


def pushed_replay(beats: NewestBeats, instance: str, signed_ms: int, mono_ms: int,
                  age_s: float, bound_s: float | None, skew_s: float,
                  applied: int = -1) -> str | None:
    """Why a verified ack pushed by `instance`, signed at `signed_ms`, read at this
    process's monotonic `mono_ms`, is a replay (None: it is not, and it is remembered
    unless it is signed more than `skew_s` ahead: remembered, an ack signed an hour ahead
    made every genuine one after NTP set that clock right a replay for the hour): signed
    `age_s` ago, more than `bound_s` (None: no bound known yet), or no later than one of
    that instance pushed before (in the same millisecond: for no later generation
    `applied`; a kill applied right after another is acked within one)."""
    if bound_s is not None and age_s > bound_s:
        return (f"{instance!r} signed {age_s:.0f}s ago: a replay (or that instance's "
                "clock is off)")
    least = beats.min_age_ms(instance, signed_ms, mono_ms, applied)
    if least is not None:
        return (f"{instance!r} signed no later than an ack of it read {least / 1000.0:.1f}s "
                "ago at least: a replay (or that instance's clock stepped back)")
    if age_s >= -skew_s:
        beats.saw(instance, signed_ms, mono_ms, applied)
    return None
