"""What an instance does with a stored document it refuses: `_blind`, and `_refusal`.

Owns `RefusedDoc`, the base of vouching.Vouching (mixed into `Sync` through `Repair`): a
document a newer version wrote is never written over (StoreFromNewerVersion), unless it is
no newer than a trusted instance holds (`replayed_newer`: a replay, said so: `as_replay`);
a document this instance cannot verify is written over only by an instance whose state is
known to be the fleet's (vouching.py: `_unvouched`) and holds some (StoreUnverifiable,
not ready, the fix named: a retired key's, a rotation's begun to, the key's).
"""

from __future__ import annotations

from gateway import __version__
from gateway.config import StateConfig
from gateway.domain.newerdoc import NOT_WRITTEN_OVER
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreFromNewerVersion, StoreUnverifiable
from gateway.state.rotationbegun import ROLLED_BACK
from gateway.state.signing import MAGIC
from gateway.state.store import Loaded, Store

__all__ = ["RefusedDoc", "as_replay", "replayed_newer"]



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


class RefusedDoc:
    store: Store
    cfg: StateConfig
    from_snapshot: bool
    ready: bool
    #: why the store holds a document this instance cannot verify and will not write over
    #: (`_blind`): not ready (/readyz 503 state_unverifiable); None once it verifies one
    unverifiable: str | None

    @property
    def migrating(self) -> bool:  # (provided by Sync)
        raise NotImplementedError

    def _unvouched(self) -> str | None:  # (provided by Vouching)
        raise NotImplementedError

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
