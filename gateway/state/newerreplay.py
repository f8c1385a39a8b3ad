"""A newer version's state document put back after the fleet moved past it: a replay.

Owns `NewerSeen`: the documents a newer version wrote that this instance read in the store
(their SHA-256), and those it then saw replaced by a document it verified and applies (the
newer version rolled back, the state key deleted and re-seeded: README "Upgrading"). Such
a document read again is no newer version writing now but an old one put back, which
anyone who can write to Redis can do with a copy of it: taken as the newer version's, every
instance of this one stopped taking writes (a kill answered 503 state_from_newer_version)
and paged KillgateStateNewerDocument for as long as the copy was put back (found by review
revmerge37). It is judged as any old document put back instead: counted as tampering and
re-seeded over (reseed.py, backing off while repeated). Only what this process saw: one
started since takes it for a newer version's, until an instance that saw it re-seeds.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib

from gateway.state.store import Loaded

__all__ = ["MAX_KEPT", "NewerSeen"]

#: digests remembered, each kind (a newer version writes one document per write)
MAX_KEPT = 64


def _bounded(d: dict[str, None]) -> None:
    while len(d) > MAX_KEPT:
        del d[next(iter(d))]


class NewerSeen:
    __slots__ = ("_past", "_seen")

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}  # newer documents read, not yet replaced
        self._past: dict[str, None] = {}  # newer documents read, replaced since

    def judge(self, got: Loaded) -> Loaded:
        """`got`, or, for a newer version's document this instance saw replaced before,
        the same refusal as an old document put back (not `newer`)."""
        if got.newer and got.refused is not None:
            digest = hashlib.sha256(got.refused).hexdigest()
            if digest in self._past:
                return dataclasses.replace(got, newer=False, cause="other", problem=(
                    f"{got.problem}; but this instance read a document that replaced it "
                    "since: an old document of a newer version put back (a replay), not "
                    "one a newer version writes now"))
            self._seen[digest] = None
            _bounded(self._seen)
        elif got.doc is not None:
            self.moved_on()
        return got

    def moved_on(self) -> None:
        """The store holds a document this instance verified (read, or synced to): every
        newer document read before was replaced."""
        if self._seen:
            self._past.update(self._seen)
            self._seen.clear()
            _bounded(self._past)
