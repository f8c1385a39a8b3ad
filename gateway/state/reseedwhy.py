"""Why a store is re-seeded, in words: the `state.reseed` event's reason and the
`state_store_reseed` log line's `why` (reseed.py), and whether it is a key rotation's
re-sign rather than a repair. Pure.
"""

from __future__ import annotations

from gateway.domain.branches import descends, lifts_unrecorded
from gateway.domain.statedoc import StateDoc
from gateway.state.store import Loaded

__all__ = ["is_resign", "reseed_why"]


def is_resign(got: Loaded, mine: StateDoc, lost: str | None) -> bool:
    """A rotation's step-2 re-sign: the store holds, signed with the previous key, the
    document we hold, or a newer one on our history (an older one is a replay, said and
    counted as one, not as the re-sign: revrot4)."""
    doc = got.doc
    return bool(got.old_key and got.trusted and doc is not None and lost is None and (
        (doc.generation, doc.epoch) == (mine.generation, mine.epoch) or (
            doc.generation > mine.generation and descends(doc, mine) is not False)))


def reseed_why(got: Loaded, mine: StateDoc, lost: str | None, resign: bool) -> str:
    """What the store's state was, that it is re-seeded from `mine` (`lost`: the newest
    head this instance saw, which the store lacks)."""
    doc = got.doc
    return ("signed with the previous key (key rotation step 2: re-signed with the "
            "current one, so that step 3 finds it)" if resign
            else "empty" if got.empty else "a newer version's, older than this instance's "
            "(replayed after a rollback?)" if got.newer  # (refuseddoc.replayed_newer)
            else "refused" if got.problem is not None
            else "generation key disagrees" if not got.trusted
            else "older" if doc is None or doc.generation < mine.generation
            else "behind: without the newest audit events this instance saw appended "
                 "(restored from a backup?)" if lost is not None
            else "another document at our generation"
            if doc.generation == mine.generation
            else "on another branch of the history, without what this instance holds"
            if descends(doc, mine) is False
            else "without a kill this instance holds, and naming no unkill of it"
            if lifts_unrecorded(mine, doc)
            else "of another epoch, without what this instance holds")
