"""Whether this instance's state is known to be the fleet's; `_blind`, what it does when
the store holds a document it cannot verify and it holds no such state.

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

from gateway import __version__
from gateway.config import StateConfig
from gateway.domain.newerdoc import NOT_WRITTEN_OVER
from gateway.domain.statedoc import StateDoc
from gateway.domain.writeids import WRITER_TAG, write_generation, writer_of
from gateway.errors import StoreFromNewerVersion, StoreUnverifiable
from gateway.state.rotationbegun import ROLLED_BACK
from gateway.state.signing import MAGIC
from gateway.state.snapshot import Origin, SnapshotFile
from gateway.state.store import Loaded, Store

__all__ = ["OWN_EPOCHS", "SIBLING_TAG", "Vouching", "as_replay", "replayed_newer", "sibling_tag"]

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


def replayed_newer(got: Loaded, mine: StateDoc, trusted: bool) -> bool:
    """Whether `got`, a document a newer version wrote, is no newer than the one this
    instance holds (`mine`, `trusted`: known to be the fleet's): a replay, not a newer
    writer's current state. A newer version commits over the store's document at the next
    generation, and this one writes nothing over a newer one's: a generation this instance
    holds as far as it was written once that document was gone (a rollback's re-seed: the
    state key deleted, the same generation as the newer version's last, next to it in the
    generation key). Refused for good, one replayed after a rollback (by whoever can write
    to redis, once, no key needed) made every kill through every instance of the fleet
    answer 503 state_from_newer_version until an operator deleted it by hand."""
    gen = got.newer_generation
    # (an instance holding nothing has nothing to put in its place: not ready, as ever)
    return got.newer and trusted and gen is not None and 0 < mine.generation >= gen


def as_replay(problem: str, held: int) -> str:
    """The refusal `problem` of a newer version's document that is a replay
    (`replayed_newer`), said as what happens to it: written over (said "nor written over",
    the instance's last_error and the re-seed's audited `before.problem` contradicted the
    re-seed they came with)."""
    return problem.replace(NOT_WRITTEN_OVER, (
        f"not applied; no newer than the generation {held} this instance holds, so no "
        "newer writer's current state but a replay (after a rollback past that version?): "
        "written over by a re-seed of this instance's state"))


#: what to do when the store's document is signed with the key the fleet retired
_RESIGN = ("this instance's key is the fleet's, but the fleet's document was not re-signed "
           "with it: step 3 of a key rotation (previous_signing_key removed) came before a "
           "write re-signed the state (README Key rotation), or an old document was put "
           "back, or someone wrote one naming that key id. Make a write (a kill or an "
           "unkill) through an instance still holding the old key as its previous one, or "
           "give this one previous_signing_key_env again (step 2) and restart it")


class Vouching:
    snapshot: SnapshotFile
    store: Store
    cfg: StateConfig
    from_snapshot: bool
    ready: bool
    #: why the store holds a document this instance cannot verify and will not write over
    #: (`_blind`): not ready (/readyz 503 state_unverifiable); None once it verifies one
    unverifiable: str | None
    _own_epochs: dict[str, None]
    #: each of `_own_epochs` -> the generation this process held when it created (or, after
    #: a restart, read) it: `_written_by_another` counts the writes past it only
    _epoch_from: dict[str, int]
    _seen_fleet: bool

    @property
    def migrating(self) -> bool:  # (provided by Sync)
        raise NotImplementedError

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

    def _refusal(self, got: Loaded, mine: StateDoc) -> str | None:
        """Why the store's document is refused (`got.problem`), said as a replay of a newer
        version's document when it is one (`as_replay`: written over, not "nor written
        over")."""
        if got.problem is not None and got.newer \
                and replayed_newer(got, mine, self._unvouched() is None):
            return as_replay(got.problem, mine.generation)
        return got.problem

    def _blind(self, got: Loaded, mine: StateDoc) -> None:
        """Raise StoreUnverifiable when the store holds a document we refuse and we hold no
        state to put in its place (no snapshot, no sync yet): most often not a forgery but
        this instance's key (state.signing_key_env) that is not the fleet's. A re-seed then
        wrote an empty document over the fleet's kills, and the instance, "synced", served
        every killed route. It stays state_unknown (503, not ready) instead, until it can
        verify what the store holds. (A document in the format before signing still
        migrates: its kills are what the re-seed keeps.)
        A document a newer version wrote (`got.newer`: verified, in a format or with fields
        this one does not know, statedoc.FORMAT) is never written over, whatever this
        instance holds: StoreFromNewerVersion (re-seeded over, what the newer version
        added, a new kind of kill say, was dropped from the fleet's state). But one older
        than the document a trusted instance holds (`replayed_newer`) is no newer writer's
        current state: a replay (after a rollback past that version), repaired as any
        older document is."""
        if got.newer and not replayed_newer(got, mine, self._unvouched() is None):
            held = mine.generation > 0 or bool(mine.kills)
            msg = (f"the state store holds a document a newer version of killgate wrote "
                   f"({got.problem}); this instance runs killgate {__version__}, which cannot "
                   "apply it without dropping what it does not know: it writes nothing over "
                   "it and is not synced (" + (
                       "the state it holds stays in force; state.on_unavailable applies past "
                       "max_staleness" if held else "it holds no state: not ready") +
                   "). Make changes through an instance of the newer version, and finish "
                   "the upgrade (or roll the newer one back and restore its state)")
            if not held:
                self.unverifiable = msg
            raise StoreFromNewerVersion(msg)
        legacy = (got.refused is not None and self.migrating
                  and not got.refused.startswith(MAGIC))  # (unsigned: may hold kills)
        # the kills of a snapshot we could not verify either (snapshot.py: the key changed)
        # are no state to write over a document the store holds: only over an empty store.
        # Nor is what this instance re-seeded from them, so long as it has verified no
        # document but its own (its epochs): a key that is not the fleet's (a rotation step
        # skipped) then seeded a flushed store first and, "verified" by its own document,
        # re-seeded over the fleet's every 30 s, wiping its weights, overrides and history
        # (a ping-pong with the fleet's re-seeds). A kill through it answers 503 instead.
        # So too after a restart: its snapshot, signed with its own key, says where the
        # state came from (`_unvouched`; with the epochs it had created).
        untrusted = self._unvouched() is not None
        if (got.doc is None and got.problem is not None and not legacy
                and ((mine.generation == 0 and not mine.kills) or untrusted)):
            if untrusted and self.from_snapshot and not self.ready:
                self.from_snapshot = False  # (not ready on them: 503 state_unknown, as before)
            why = self._unvouched()
            holds = (f"no state it knows to be the fleet's ({why})" if why is not None
                     else "none of its own")
            # (/readyz 503 state_unverifiable until it verifies one; not an instance holding
            # no state told to route on the config alone: state.ready_without_state)
            # (a document of the key the fleet retired: this instance's key is the fleet's,
            # the state was not re-signed before step 3; "fix your key" misled: review
            # revmerge37)
            # (or of the key a rotation from ours was begun to: rolled back? rotationbegun.py)
            begun = getattr(self.store, "begun_to", None)
            fix = _RESIGN if got.cause == "retired" else ROLLED_BACK.format(kid=begun) if (
                begun and got.cause == "unknown_key_id" and begun in str(got.problem)) else None
            self.unverifiable = None if why is None and self.cfg.ready_without_state else (
                f"the stored state cannot be verified ({got.problem}) and this instance holds "
                f"{holds}: it writes nothing over it and is not ready; " + (
                    fix or "is its state.signing_key_env (or signing_key_file) the fleet's "
                    "key? Fix it and restart this instance"))
            if why is not None and self.ready:  # (it enforces its state; the store answers)
                raise StoreUnverifiable(
                    f"the state store holds a document this instance cannot verify "
                    f"({got.problem}), and this instance's state is not known to be the "
                    f"fleet's ({why}): it writes nothing over that document and is not ready "
                    "(the kills it holds stay enforced). Make changes through another "
                    "instance; " + (fix or "is this one's state.signing_key_env (or "
                                           "signing_key_file) the fleet's key? Put the fleet's "
                                           "key there and restart it"))
            raise StoreUnverifiable(
                f"the stored state cannot be verified ({got.problem}) and this instance "
                f"holds {holds}: it serves no route until it can verify the store's (" + (
                    fix or "is state.signing_key the fleet's?") +
                "); make changes through another instance")
