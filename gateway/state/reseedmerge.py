"""The restrictive merge a store that lost or spoiled its state is re-seeded with.

Owns `merge_restrictive` (every kill either side knows survives, but one the newer side
lifted by an unkill), the lineage a re-seed remembers (`MAX_LINEAGE`) and `new_epoch`.
Pure.
"""

from __future__ import annotations

import secrets

from gateway.domain.branches import (
    descends,
    joined_lifted,
    joined_lifted_writes,
    joined_writes,
    lifted_by_write,
)
from gateway.domain.statedoc import Change, StateDoc, apply_change

__all__ = ["MAX_LINEAGE", "merge_restrictive", "new_epoch"]


def new_epoch() -> str:
    return secrets.token_hex(8)


def merge_restrictive(store: StateDoc | None, mine: StateDoc) -> StateDoc:
    """The state to re-seed a store with when its content is missing, refused or older.

    `store` must be a verified document (or None): nothing unverified is ever copied.
    Every kill either side knows survives, except the older one's that the newer one
    lifted: when the newer names the older's write (descends from it), a kill the older
    holds and the newer lacks was lifted by an unkill since (a store restored to before
    an unkill, an old document replayed; re-seeds never drop a kill); so too, whatever the
    distance, a kill whose flag the newer names lifted by its write (`lifted_writes`: an
    unkill of that very flag, never one of another branch). Overrides, history
    and identities come from the newer document. The generation moves past both, so
    every instance applies it."""
    lineage = _lineage(mine, store)
    if store is None:
        return apply_change(mine, Change(epoch=new_epoch())).with_changes(lineage=lineage)
    newer, older = (mine, store) if mine.generation >= store.generation else (store, mine)
    missing = {} if newer.generation > older.generation and descends(newer, older) else {
        k: f for k, f in older.kills.items()
        if k not in newer.kills and not lifted_by_write(newer, k, f)}
    merged = apply_change(newer, Change(kills=missing, epoch=new_epoch()),
                          max(store.generation, mine.generation) + 1)
    return merged.with_changes(lineage=lineage, writes=joined_writes(older, merged),
                               lifted=joined_lifted(older, merged),
                               lifted_writes=joined_lifted_writes(older, merged))


#: epochs a document remembers descending from (the newest generations kept)
MAX_LINEAGE = 32


def _lineage(*docs: StateDoc | None) -> dict[str, int]:
    """What a re-seed of `docs` descends from: each one (its epoch at its generation) and
    everything each descends from."""
    out: dict[str, int] = {}
    for doc in docs:
        if doc is None:
            continue
        for epoch, gen in (*doc.lineage.items(), (doc.epoch, doc.generation)):
            out[epoch] = max(gen, out.get(epoch, -1))
    return dict(sorted(out.items(), key=lambda kv: kv[1])[-MAX_LINEAGE:])
