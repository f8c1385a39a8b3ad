"""Whether this instance's state is known to be the fleet's (what `_blind`, refuseddoc.py,
its base, asks when the store holds a document it cannot verify).

An instance whose state came from a snapshot it could not verify (its kills only), or from
one that says so (`unverified_origin`), writes nothing over a stored document it cannot
verify until it verifies a document of an epoch neither it nor its sibling workers created
(its key is then the fleet's), or an operator vouches for it (`vouch`: `killgate state
vouch`, POST /v1/state/vouch: vouchwrite.py). Mixed into `Sync` through `Repair`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket

from gateway.domain.statedoc import StateDoc
from gateway.domain.writeids import WRITER_TAG, write_generation, writer_of
from gateway.state.refuseddoc import RefusedDoc
from gateway.state.snapshot import Origin, SnapshotFile

__all__ = ["OWN_EPOCHS", "SIBLING_TAG", "Vouching", "sibling_tag"]

#: the most epochs an instance remembers having created (its newest): a store that lost its
#: data again and again (a crash-looping Redis without persistence) is re-seeded each time,
#: and the snapshot carries them (`_origin`); only the store's newest document is compared
OWN_EPOCHS = 64

#: hex digits of an epoch that name the host and snapshot file of the workers that created
#: it, while their state is not known to be the fleet's (`_sibling_tag`)
SIBLING_TAG = WRITER_TAG


@functools.lru_cache(maxsize=16)
def sibling_tag(snapshot: str) -> str:
    """`Vouching._sibling_tag` of the snapshot file at `snapshot` (a real path), computed once
    per process: its host (name and machine id) and the file, by its path and its folder's
    inode. The folder's inode tells apart instances whose host name and snapshot path are
    the same but whose files are not: containers on one host that share its name (host
    networking) or were given the same one, each with its own volume mounted at the same
    path. By host name and path alone each took the other's re-seed for a sibling worker's
    and never vouched (review revmerge26). Stable across restarts while the folder stays."""
    folder = os.path.dirname(snapshot)
    try:
        inode = str(os.stat(folder).st_ino)
    except OSError:
        inode = ""  # (no folder: no snapshot read, and none to tell apart)
    try:
        with open("/etc/machine-id", encoding="ascii", errors="replace") as f:
            machine = f.read(64).strip()
    except OSError:
        machine = ""
    where = "\0".join((socket.gethostname(), machine, snapshot, inode))
    return hashlib.sha256(where.encode()).hexdigest()[:SIBLING_TAG]


class Vouching(RefusedDoc):
    snapshot: SnapshotFile
    _own_epochs: dict[str, None]
    #: each of `_own_epochs` -> the generation this process held when it created (or, after
    #: a restart, read) it: `_written_by_another` counts the writes past it only
    _epoch_from: dict[str, int]
    _seen_fleet: bool

    def _saw(self, doc: StateDoc) -> None:
        """Note a verified document: one of an epoch this instance did not create (its
        re-seeds') shows that its key is the fleet's (`_blind`). Nor did its sibling workers
        (`--workers N`: one snapshot file, one key) when its state is not known to be the
        fleet's: one seeded the store and the others, "vouched for" by that seed, re-seeded
        over the fleet's document they cannot verify (`_sibling_tag`). Once it has created
        epochs of its own so (it seeded the store), only a document that descends from one of
        them (its `lineage` names it: a re-seed by another instance that verified ours)
        vouches: a genuine document of its key from before (a key rolled back; an old one put
        back into the store) is of another epoch too, and it cleared the mark, after which the
        instance re-seeded over every document of the fleet it cannot verify (`_vouches`).
        A sibling's epoch is remembered as one of its own: the group's, which a document
        descending from it vouches for as well. A worker whose re-seed of a flushed store
        lost the race to its sibling's (both loaded it empty) held only an epoch that never
        landed: a document descending from the store's (an operator's vouch through the
        sibling, `vouchwrite.py`) never vouched for it, and, still marked, its snapshot
        writes put `unverified_origin` back into the file its sibling had just written
        without it (tests/test_state_vouch.py, the race to seed)."""
        if self._seen_fleet:
            return
        if self._vouches(doc):
            self._seen_fleet = True
            self._own_epochs.clear()  # (no longer needed)
            self._epoch_from.clear()
        elif doc.epoch.startswith(self._sibling_tag()) and self._unvouched() is not None:
            self._mine(doc.epoch, doc.generation)

    def _vouches(self, doc: StateDoc) -> bool:
        """Whether the verified `doc` shows that this instance's key is the fleet's (see
        `_saw`): written by another instance (not of its own epochs, nor, while its state is
        not known to be the fleet's, of its sibling workers'), and, once it created epochs of
        its own while so, descending from one of them (what a replay cannot produce: the
        epochs are drawn at random when it re-seeds)."""
        if doc.epoch in self._own_epochs:
            return self._written_by_another(doc)
        if self._unvouched() is None:
            return True
        if doc.epoch.startswith(self._sibling_tag()):
            return False
        return not self._own_epochs or any(e in self._own_epochs for e in doc.lineage)

    def _written_by_another(self, doc: StateDoc) -> bool:
        """Whether `doc`, of an epoch this instance created (it seeded the store from a
        state not known to be the fleet's), names a write by an instance of another host or
        snapshot file (its write id's tag: writeids.writer_of): another holder of its key
        wrote on its state, as a re-seed merging its document shows (`_vouches`). Without
        it, a lone instance (or group) that seeded a flushed store stayed marked for good
        though the fleet's other instances, holding its key, adopted its document and wrote
        on it (never re-seeding: they verify it). Its own writes, its sibling workers' and
        its own earlier processes' carry its tag (host, machine, snapshot file); a
        heartbeat would not do: one of its own earlier process (another name) is fresh for
        a lease after that process died, and one replayed in order for minutes more, while
        a write on an epoch it drew at random cannot come before it (test_vouch_by_write)."""
        since = self._epoch_from.get(doc.epoch)
        if since is None:
            return False
        mine = self._sibling_tag()
        return any((tag := writer_of(w)) is not None and tag != mine
                   and write_generation(w) > since for w in doc.writes)

    def _sibling_tag(self) -> str:
        """The first hex digits of each epoch this instance's workers create while their
        state is not known to be the fleet's: the same for every worker of this host that
        shares its snapshot file (an epoch stays 16 hex digits; one drawn at random that
        happens to begin so only waits for the next to vouch for this instance); the tag
        every write id of this instance ends with (writeids.new_write). Computed once."""
        tag: str | None = self.__dict__.get("_tag")
        if tag is None:
            tag = self.__dict__["_tag"] = sibling_tag(os.path.realpath(self.snapshot.path or ""))
        return tag

    def _unvouched(self) -> str | None:
        """Why this instance's state may not be the fleet's (None: it is, as far as it
        knows): it came from a snapshot it could not verify (its kills only), or from one
        that says so (`unverified_origin`: written since such a start, before this instance
        verified a document of an epoch it did not create), and it has verified none since."""
        if self._seen_fleet:
            return None
        if self.snapshot.kills_only is not None:
            return (f"its state came from a snapshot whose kills alone it took "
                    f"({self.snapshot.kills_only})")
        return self.snapshot.unverified_origin

    def _origin(self) -> Origin:
        """What a snapshot written now says of where its state came from (snapshot.py)."""
        why = self._unvouched()
        return None if why is None else {"why": why, "epochs": list(self._own_epochs)}

    def _mine(self, epoch: str, since: int = 0) -> str:
        """Remember `epoch` as one this instance created, until it verifies another's;
        `since`: the generation it held when it did (`_written_by_another` counts writes
        past it only: a re-seed carries the writes of what it merged)."""
        if not self._seen_fleet:
            self._own_epochs[epoch] = None
            self._epoch_from.setdefault(epoch, since)
            while len(self._own_epochs) > OWN_EPOCHS:
                self._epoch_from.pop(next(iter(self._own_epochs)), None)
                del self._own_epochs[next(iter(self._own_epochs))]
        return epoch
