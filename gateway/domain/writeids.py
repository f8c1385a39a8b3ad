"""What a state document remembers of its own history, besides its epochs' lineage: the
ids of the newest writes it descends from, and, per kill key, the newest kill an unkill
lifted. domain/branches.py reads them to tell a successor from a document written on
another branch of the history. Pure functions over plain values; no imports of ours.

Write ids are "<generation>:<random id><writer tag>" strings (validated ten times faster
than pairs); the tag (`writer_of`) names the host and snapshot file of the instance that
wrote it, so that an instance whose key is not known to be the fleet's tells a write by
another holder of its key on a state it seeded from its own (state/vouching.py).
`lifted` maps a kill key to the `generation` of the newest kill flag an unkill lifted,
oldest lift first (a lift moves its key to the end; the first keys are dropped): where
write ids cannot tell (an instance 32 writes or more behind), a document that lacks
a kill an instance holds counts as an unkill of it only if it names that kill as lifted.
A generation does not name one kill: a write on another branch may have killed and lifted
the same key at that generation. `lifted_writes` names them by the write that made each
flag (KillFlag.write): per kill key, the newest MAX_LIFTS_PER_KEY flags lifted or replaced
by a newer kill (a drill's kill taken over), in the same order and keys as `lifted`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

__all__ = ["MAX_LIFTED", "MAX_LIFTS_PER_KEY", "MAX_WRITES", "RETRY_OF", "descends_from",
           "lifted_after",
           "lifted_writes_after", "new_write", "trim_writes", "with_lifted_writes", "with_lifts",
           "write_generation", "writer_of"]

MAX_WRITES = 32  # write ids a document keeps (its newest generations')
MAX_LIFTED = 256  # kill keys whose last lift a document keeps (the newest lifts)
MAX_LIFTS_PER_KEY = 4  # the flags of one key `lifted_writes` names (the newest)
WRITER_TAG = 4  # hex digits of a write id naming its writer (state/vouching.SIBLING_TAG)
_HEX = frozenset("0123456789abcdef")

#: the write ids a retry after `outcome_unknown` stands in for (admin/writes.py sets them
#: for the retry's write, state/writes.py refuses to write over a state that holds one: an
#: earlier attempt's commit may land after the retry asked whether it had)
RETRY_OF: ContextVar[frozenset[str]] = ContextVar("killgate_retry_of", default=frozenset())


def new_write(generation: int, writer: str = "") -> str:
    """A write's id: its generation, 8 random hex digits, then `writer` (the writing
    instance's host-and-snapshot tag, WRITER_TAG hex digits: state/vouching.py; empty from
    a version before it, or where none is given)."""
    return f"{generation}:{secrets.token_hex(4)}{writer}"


def writer_of(write: str) -> str | None:
    """The writer tag a write id carries (None: none, as a version before tags wrote)."""
    _, _, rest = write.partition(":")
    tag = rest[8:]
    return tag if len(rest) == 8 + WRITER_TAG and all(c in _HEX for c in tag) else None


def write_generation(write: str) -> int:
    """The generation of a `writes` entry; -1 for a malformed one (none is ever written)."""
    gen, _, _ = write.partition(":")
    return int(gen) if gen.isdigit() and len(gen) < 17 else -1


def descends_from(writes: tuple[str, ...], write: str, generation: int) -> bool | None:
    """Whether a document whose `writes` these are, at `generation` or past it, holds the
    write `write` (one of `generation` whose commit's answer was lost): True when it names
    it, False when its writes reach back to that generation without it (another commit
    took the generation: it can no longer land), None when they do not reach so far."""
    if write in writes:
        return True
    if writes and 0 <= write_generation(writes[0]) <= generation:
        return False
    return None


def trim_writes(writes: tuple[str, ...]) -> tuple[str, ...]:
    """The newest MAX_WRITES of `writes` (by generation); a generation the cut would split
    (a re-seed keeps both sides' writes) is dropped whole (domain/branches.py)."""
    if len(writes) <= MAX_WRITES:
        return writes
    kept = writes[-MAX_WRITES:]
    first = write_generation(kept[0])
    if write_generation(writes[-MAX_WRITES - 1]) == first:
        kept = tuple(w for w in kept if write_generation(w) != first)
    return kept


def lifted_after(lifted: Mapping[str, int], kills: Mapping[str, Any],
                 change: Mapping[str, Any | None]) -> dict[str, int]:
    """`lifted` once `change` (kill key -> flag, None: lifted) applies to `kills` (kill key
    -> a flag with a `generation`): each kill lifted is recorded by its flag's generation
    (`with_lifts`)."""
    lifts = [(key, int(kills[key].generation))
             for key, flag in change.items() if flag is None and key in kills]
    if not lifts and type(lifted) is dict and len(lifted) <= MAX_LIFTED:
        return lifted  # (nothing lifted: the same record; documents share what is unchanged)
    return with_lifts(lifted, lifts)


def with_lifts(lifted: Mapping[str, int], lifts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """`lifted` (oldest lift first) with `lifts` recorded in turn, each moved to the end
    (a key keeps its highest generation); the newest MAX_LIFTED lifts are kept, by when
    they were lifted: a kill made long ago and lifted now is the one an instance far
    behind still holds."""
    out = dict(lifted)
    for key, gen in lifts:
        out[key] = max(gen, out.pop(key, -1))
    items = list(out.items())
    return dict(items[-MAX_LIFTED:]) if len(items) > MAX_LIFTED else out


def lifted_writes_after(lifted: Mapping[str, tuple[str, ...]], kills: Mapping[str, Any],
                        change: Mapping[str, Any | None]) -> dict[str, tuple[str, ...]]:
    """`lifted_writes` once `change` applies to `kills` (kill key -> a flag with a `write`):
    each flag lifted (None) or replaced by a new one (generation 0: a kill that takes an
    open drill's over) is recorded by the write that made it. A flag written by a version
    before flag writes (none) is not: its holders compare generations (`lifted`)."""
    lifts = [(key, kills[key].write) for key, flag in change.items()
             if key in kills and kills[key].write and (flag is None or flag.generation == 0)]
    if not lifts and type(lifted) is dict and len(lifted) <= MAX_LIFTED:
        return lifted  # (nothing lifted or replaced: the same record, as `lifted_after`)
    return with_lifted_writes(lifted, lifts)


def with_lifted_writes(lifted: Mapping[str, tuple[str, ...]],
                       lifts: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """`lifted` (oldest lift first) with `lifts` (kill key, flag write) recorded in turn:
    the key moves to the end, its writes keep the newest MAX_LIFTS_PER_KEY (once each);
    the newest MAX_LIFTED keys are kept."""
    out = dict(lifted)
    for key, write in lifts:
        kept = tuple(w for w in out.pop(key, ()) if w != write)
        out[key] = (*kept, write)[-MAX_LIFTS_PER_KEY:]
    items = list(out.items())
    return dict(items[-MAX_LIFTED:]) if len(items) > MAX_LIFTED else out
