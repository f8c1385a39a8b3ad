"""An audit event MAC'd under a key no longer held (a rotation removed it), authenticated
by the chain instead: the events after it link to its hash, each hash recomputes, up to
the first one a held key authenticates (its MAC covers its hash, which covers every link
before it). Retention's trim takes the newest trim checkpoint so after a rotation (a
checkpoint is never taken on its hash alone: one made up under a key id nobody holds
would let a trim hide a deletion); the drill history shows drills from before one.

Which entries of a stream are links of the chain back from the head a signed state
document anchors (`AnchoredLinks`): a genuine event of another deployment sharing the audit
key (its MAC covers its hash only, not the redis prefix), copied into this one's stream by
whoever can write to redis, is genuine but on no link of it (review revprefix).

Pure: no I/O. Oldest first (`pin_walk`, `pinned`); newest first (`ChainFromNewest`,
`AnchoredLinks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.domain.audit import event_hash, genuine

__all__ = ["AnchoredLinks", "ChainFromNewest", "pin_walk", "pinned"]


def _intact(ev: Any) -> bool:
    h = ev.get("hash") if isinstance(ev, dict) else None
    return isinstance(h, str) and isinstance(ev.get("prev_hash"), str) and h == event_hash(ev)


def _held(ev: dict[str, Any], keys: Mapping[str, bytes]) -> bool:
    """Whether `ev` names a key id of `keys` (a kid that is no string, written by whoever
    can write to the store, is none: looked up, a list raised, and GET /v1/drills answered
    500, review revtrail)."""
    kid = ev.get("kid")
    return isinstance(kid, str) and kid in keys


def pin_walk(prev: str, after: Iterable[Any], keys: Mapping[str, bytes]) -> bool | str:
    """Walk `after` (the events following the one whose hash is `prev`, oldest first): True
    when they link and recompute up to one genuine under `keys` (the event of `prev` is
    then authenticated), False at a break (a link, a hash, or a MAC under a held key that
    does not match), else the hash the next event must continue (read more and go on)."""
    for ev in after:
        if not _intact(ev) or ev["prev_hash"] != prev:
            return False
        if genuine(ev, keys):
            return True
        if _held(ev, keys):  # (a held key's MAC that does not match: edited)
            return False
        prev = str(ev["hash"])
    return prev


def pinned(ev: Any, after: Iterable[Any], keys: Mapping[str, bytes]) -> bool:
    """Whether `ev` is authenticated: genuine under `keys`, or intact and pinned by the
    chain of `after` (the events following it, oldest first) to a genuine one."""
    if not isinstance(ev, dict):
        return False
    if genuine(ev, keys):
        return True
    return bool(keys) and _intact(ev) and pin_walk(str(ev["hash"]), after, keys) is True


class ChainFromNewest:
    """Reading a trail newest first (pages), which of its events the chain authenticates
    from a newer genuine one (`by_chain(i)`: the i-th event fed, counting from the newest;
    only asked for the events a caller wants and finds not genuine, so a trail of genuine
    events costs nothing more than before). Events fed must be contiguous."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self.keys = keys
        self.seen: list[dict[str, Any]] = []
        self._done = 0  # events walked
        self._expected: str | None = None  # the hash the next older event must have
        self._ok: set[int] = set()

    def feed(self, events: Iterable[dict[str, Any]]) -> None:
        self.seen.extend(events)

    def by_chain(self, i: int) -> bool:
        while self._done <= i and self._done < len(self.seen):
            ev = self.seen[self._done]
            ok = isinstance(ev, dict)
            if ok and genuine(ev, self.keys):
                self._expected = str(ev.get("prev_hash"))
            elif (ok and self._expected is not None and ev.get("hash") == self._expected
                  and not _held(ev, self.keys) and _intact(ev)):
                self._ok.add(self._done)
                self._expected = str(ev.get("prev_hash"))
            else:
                self._expected = None
            self._done += 1
        return i in self._ok


class AnchoredLinks:
    """Reading a trail newest first (pages), which entries are links of the chain back from
    `head` (the head a verified state document anchors: signed with the state key, bound to
    the prefix): each one's hash is the one the newer link continues, and recomputes from
    its content. Any other entry (added to the stream by someone without the signing key:
    another deployment's genuine event copied in, an event past the head) is passed over,
    as control/occurrence.py's walk does. No head: no entry is a link.

    `known`: links verified by an earlier walk (hash -> prev_hash), kept by the caller
    across reads and added to here: content that hashes to a hash names one prev_hash, so
    an entry naming both is that link again, without hashing it again (~90k instructions
    an event, callgrind: a drill history read of 5000 events re-hashed each at every new
    event). Only the walk takes an entry so; what a caller accepts it checks on its own."""

    def __init__(self, head: str | None, known: dict[str, str] | None = None) -> None:
        self._expected = head
        self.known: dict[str, str] = {} if known is None else known

    def links(self, events: Iterable[Any]) -> list[bool]:
        """For each of `events` (the next page, newest first): whether it is a link."""
        out: list[bool] = []
        known = self.known
        for ev in events:
            exp = self._expected
            prev = ev.get("prev_hash") if exp is not None and isinstance(ev, dict) else None
            ok = (exp is not None and isinstance(prev, str) and ev.get("hash") == exp
                  and (known.get(exp) == prev or event_hash(ev) == exp))
            if ok:
                known[str(exp)] = str(prev)
                self._expected = str(prev)
            out.append(ok)
        return out
