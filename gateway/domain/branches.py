"""How two state documents relate: which would relax the other, and whether one descends
from the other or stands on another branch of the history.

A store's history is meant to be one line of generations. It forks when the store loses
its newest documents but not the older ones (a lagging replica promoted, a backup
restored) and someone writes on what is left: the new documents are newer than ones they
never saw. Generations alone cannot tell such a document from a successor, so every write
gets an id (statedoc.apply_change) and a document keeps the ids of the newest MAX_WRITES
writes it descends from (`writes`, across epochs: a re-seed keeps both sides').
Pure functions, no I/O.
"""

from __future__ import annotations

from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.domain.writeids import trim_writes, with_lifted_writes, with_lifts, write_generation

__all__ = ["collides", "descends", "joined_lifted", "joined_lifted_writes", "joined_writes",
           "lifted_by_write", "lifts_unrecorded", "relaxes", "replaces_another"]


def relaxes(old: StateDoc, new: StateDoc) -> bool:
    """Whether adopting `new` over `old` could let traffic through that `old` stops or
    shifts: a kill lifted, an override or a progressive rollout changed. Adding kills is
    the only change that never relaxes."""
    return (not old.kills.keys() <= new.kills.keys() or old.overrides != new.overrides
            or old.progress != new.progress)


def collides(held: StateDoc, other: StateDoc) -> bool:
    """Whether `other` is another document at the generation of `held`: two re-seeds (each
    starts a new epoch) from instances that knew different things, say one that missed a
    kill. Neither is newer, so neither would be adopted: they are merged (a re-seed)."""
    return other.generation == held.generation and other.epoch != held.epoch


def descends(doc: StateDoc, held: StateDoc) -> bool | None:
    """Whether `doc`'s history holds the write that produced `held`: True; False when it
    does not (another branch: `doc` names other writes at and before `held`'s
    generation); None when the two cannot tell: either was written by an instance older
    than write ids (which drops them), or `held` is older than `doc`'s window."""
    if not held.writes or not doc.writes:
        return None
    own = held.writes[-1]
    if write_generation(own) != held.generation:
        return None  # (not written by apply_change: a legacy document)
    if own in doc.writes:
        return True
    # the window is trimmed by whole generations from the oldest (trim_writes): an entry
    # at or before ours means every entry at our generation is still there (at it: the
    # window starts there, after a document without ids or a cut that dropped one whole)
    return False if 0 <= write_generation(doc.writes[0]) <= held.generation else None


def joined_writes(*docs: StateDoc) -> tuple[str, ...]:
    """The write ids a re-seed of `docs` descends from: every side's (trimmed as
    writeids.trim_writes does)."""
    every = {w for doc in docs for w in doc.writes}
    return trim_writes(tuple(sorted(every, key=lambda w: (write_generation(w), w))))


def replaces_another(stored: StateDoc, new: StateDoc) -> bool:
    """Whether committing `new` over `stored` would replace a document `new` was not
    written on: `stored` stands at the generation of `new`'s base but names another
    write there (a write on another branch, say on a promoted replica, that this writer
    has not heard of; the commit compares only the unsigned generation number). Whatever
    our base named (none: written by a version before write ids), a successor of `stored`
    names its write."""
    if not stored.writes or stored.writes[-1] in new.writes:
        return False  # (`new` descends from it: a successor, or a re-seed that merged it)
    return write_generation(stored.writes[-1]) == stored.generation == new.generation - 1


def lifts_unrecorded(held: StateDoc, doc: StateDoc) -> bool:
    """Whether `doc` lacks a kill `held` holds without naming it lifted: a document
    written where that kill was never made, not an unkill of it. For when `descends`
    cannot tell (32 writes or more behind). Only a document of this version says (it
    names writes); an older version's records no lifts."""
    if not doc.writes:
        return False
    return any(key not in doc.kills and not _names_lifted(doc, key, flag)
               for key, flag in held.kills.items())


def _names_lifted(doc: StateDoc, key: str, flag: KillFlag) -> bool:
    """Whether `doc` names `flag` lifted (or replaced by a kill lifted since): by the write
    that made it (`lifted_writes`), where both know it; else by its generation (`lifted`,
    at it or later), which a write on another branch that killed and lifted the same key
    at that generation names too. A document written by a version before flag writes
    keeps none (its write drops them): the generation then decides."""
    writes = doc.lifted_writes.get(key)
    if flag.write and writes is not None:
        return flag.write in writes
    return doc.lifted.get(key, -1) >= flag.generation


def lifted_by_write(doc: StateDoc, key: str, flag: KillFlag) -> bool:
    """Whether `doc` names `flag` lifted by the write that made it: `doc` descends from an
    unkill of that very flag (or of a kill that took it over), wherever the two documents
    stand; a write is never made twice. A re-seed drops such a kill (store.py)."""
    return bool(flag.write) and flag.write in doc.lifted_writes.get(key, ())


def joined_lifted(*docs: StateDoc) -> dict[str, int]:
    """The lifts a re-seed of `docs` remembers: each key's newest, in the order of the
    last of `docs` naming it (the newest lifts last), MAX_LIFTED keys (with_lifts)."""
    return with_lifts({}, (lift for doc in docs for lift in doc.lifted.items()))


def joined_lifted_writes(*docs: StateDoc) -> dict[str, tuple[str, ...]]:
    """The flag writes a re-seed of `docs` names lifted: each key's, in the order of the
    last of `docs` naming it (with_lifted_writes)."""
    return with_lifted_writes({}, ((key, w) for doc in docs
                                   for key, writes in doc.lifted_writes.items() for w in writes))
