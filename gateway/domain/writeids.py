"""What a state document remembers of its own history, besides its epochs' lineage: the
ids of the newest writes it descends from, and, per kill key, the newest kill an unkill
lifted. domain/branches.py reads them to tell a successor from a document written on
another branch of the history. Pure functions over plain values; no imports of ours.

Write ids are "<generation>:<random id>" strings (validated ten times faster than pairs).
`lifted` maps a kill key to the `generation` of the newest kill flag an unkill lifted,
oldest lift first (a lift moves its key to the end; the first keys are dropped): where
write ids cannot tell (an instance 32 writes or more behind), a document that lacks
a kill an instance holds counts as an unkill of it only if it names that kill as lifted.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_LIFTED", "MAX_WRITES", "lifted_after", "new_write",
           "trim_writes", "with_lifts", "write_generation"]

MAX_WRITES = 32  # write ids a document keeps (its newest generations')
MAX_LIFTED = 256  # kill keys whose last lift a document keeps (the newest lifts)


def new_write(generation: int) -> str:
    return f"{generation}:{secrets.token_hex(4)}"


def write_generation(write: str) -> int:
    """The generation of a `writes` entry; -1 for a malformed one (none is ever written)."""
    gen, _, _ = write.partition(":")
    return int(gen) if gen.isdigit() and len(gen) < 17 else -1


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
    return with_lifts(lifted, ((key, int(kills[key].generation))
                               for key, flag in change.items() if flag is None and key in kills))


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
