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

A heartbeat of this version also says its place among its process's (`Place`: when that
process first beat, by the store's clock, and how many it had signed before), and is
ordered by it (`NewestPlaces`), not by its signed time: an instance whose clock NTP
stepped back by S had every genuine heartbeat and ack refused as a replay for S, since
each was signed "no later" than the newest read. Its age is the younger of what its
signed time and its place say (`Place.at_ms`: the store's clock at its start, and a
clock no step moves since), so neither a step back of that clock nor one of the store's
makes it old. An older version's (its time alone) is ordered and aged as before.

The format rule across versions (a rolling upgrade shares one store): a newer version may
add parts to the time field after the place's five, and never changes what those five
say; this one places such a heartbeat by them (`split_time`). Refused as malformed, every
heartbeat and ack of a newer instance was taken unordered: its replays passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAX_TIME_PARTS", "PLACE_PARTS", "NewestBeats", "NewestPlaces", "Place", "beat_current",
           "pushed_replay", "split_time"]

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


@dataclass(frozen=True, order=True, slots=True)
class Place:
    """A heartbeat's signed place among its process's: the store's time (ms) when that
    process first beat, a tag drawn then (two starts in one millisecond), and how many
    heartbeats it had signed before this one. Ordered: a later start, or a later beat of
    the same start (a process never signs two at one place). And how long after that
    first beat it was signed (ms, by a clock no step moves: `since_ms`, not compared):
    `at_ms`, when it was signed by the store's clock, as that process reckons it."""

    boot_ms: int
    tag: str
    seq: int
    since_ms: int = field(default=0, compare=False)

    @property
    def at_ms(self) -> int:
        return self.boot_ms + self.since_ms

    def text(self) -> str:
        return f"{self.boot_ms}.{self.tag}.{self.seq}.{self.since_ms}"

    def said(self) -> str:
        return f"beat {self.seq} of its start at {self.boot_ms}"


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 18 else None


#: the parts of a time field that a place is read from: a newer version may add parts
#: after them (`split_time`), never change what these five say
PLACE_PARTS = 5
#: the parts a time field may have at most (a newer version's included): a bound on the
#: split of a value whoever can write to the store chose (4 KiB at most: MAX_ACK_BYTES)
MAX_TIME_PARTS = 16


def split_time(text: str) -> tuple[int, Place | None] | None:
    """A heartbeat's signed time field: its time (ms) and its place, "<ms>.<boot ms>.<tag>.
    <seq>.<since ms>" (an older version's is "<ms>" alone: no place); None when malformed.
    A newer version's may go on with more parts (".<anything>", up to MAX_TIME_PARTS in
    all: signed with the rest, not read here): it is placed by its first five, which keep
    their meaning in every version (the format rule a newer version keeps). Refused, a
    rolling upgrade's newer instances were taken unordered: a replay of theirs, stored or
    pushed, was never told from a genuine heartbeat."""
    parts = text.split(".", MAX_TIME_PARTS)
    wall = _number(parts[0])
    if wall is None or not (len(parts) == 1 or PLACE_PARTS <= len(parts) <= MAX_TIME_PARTS):
        return None
    if len(parts) == 1:
        return wall, None
    boot, seq, since, tag = _number(parts[1]), _number(parts[3]), _number(parts[4]), parts[2]
    if boot is None or seq is None or since is None or not 0 < len(tag) <= 16 \
            or not tag.isalnum():
        return None
    return wall, Place(boot, tag, seq, since)


class NewestPlaces:
    """The newest place read of each instance (and the store's stamp of arrival it was
    read with): a heartbeat placed before it, or that one stamped afresh, is a replay."""

    def __init__(self, limit: int = MAX_INSTANCES) -> None:
        self.limit = limit
        self.seen: dict[str, tuple[Place, int]] = {}

    def stored_replay(self, instance: str, place: Place, stamp_ms: int) -> str | None:
        """Why a stored heartbeat of `instance` at `place`, stamped `stamp_ms` by the store
        (its time of writing; unsigned), is a replay (None: it is not)."""
        prev = self.seen.get(instance)
        if prev is None or place > prev[0]:
            return None
        if place < prev[0]:
            return (f"{instance!r} signed before a heartbeat of it already read ({place.said()};"
                    f" {prev[0].said()} read): a replay")
        if stamp_ms != prev[1]:
            return f"{instance!r} written again after it was read ({place.said()}): a replay"
        return None

    def pushed_replay(self, instance: str, place: Place) -> str | None:
        """Why an ack pushed by `instance` at `place` is a replay: placed no later than one
        pushed before (a genuine ack is published once). Remembered when it is not."""
        prev = self.seen.get(instance)
        if prev is not None and place <= prev[0]:
            return (f"{instance!r} signed no later than an ack of it read before "
                    f"({place.said()}; {prev[0].said()} read): a replay")
        self.saw(instance, place, 0)
        return None

    def saw(self, instance: str, place: Place, stamp_ms: int) -> None:
        """A heartbeat taken: remembered when it is the newest of its instance."""
        prev = self.seen.get(instance)
        if prev is not None and place <= prev[0]:
            return
        self.seen.pop(instance, None)  # (re-inserted last: the oldest read goes first)
        self.seen[instance] = (place, stamp_ms)
        while len(self.seen) > self.limit:
            del self.seen[next(iter(self.seen))]


def beat_current(beat: object, read: str | None) -> bool:
    """Whether an addresses record naming the heartbeat `beat` (its signed time field) was
    written with the heartbeat a fleet read read (`read`), or with a later one (written
    between the two reads: a later place), not an older record put back."""
    if not isinstance(beat, str) or read is None:
        return False
    got, was = split_time(beat), split_time(read)
    return beat == read or (got is not None and was is not None and got[1] is not None
                            and was[1] is not None and got[1] > was[1])
