"""Sticky bucketing: the one function that gives a user's key its version.

Weighted rendezvous hashing (score = -ln(u) / weight, lowest wins, u from blake2b salted
by route and version): the share of each version is exactly its weight over the total,
raising one version's weight only moves users onto it, and removing a version only moves
that version's users. Stable across processes and restarts (no builtin `hash()`). Pure.
"""

from __future__ import annotations

import math
from functools import lru_cache
from hashlib import blake2b

__all__ = ["bucket_score"]


@lru_cache(maxsize=4096)
def _param(name: str) -> bytes:
    """A route's or version's name as blake2b's 16-byte salt or person: itself when it
    fits (assignments as they always were), else a digest of the whole name. Cut to 16
    bytes, `llama-3-8b-instruct-v1` and `-v2` hashed every user alike, and the version
    with the larger weight took every sticky user."""
    raw = name.encode()
    return raw if len(raw) <= 16 else blake2b(raw, digest_size=16, person=b"killgate-name").digest()


def bucket_score(route: str, version: str, key: str, weight: float) -> float:
    """Weighted rendezvous score: lower wins. Stable across processes and restarts."""
    h = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                salt=_param(route), person=_param(version)).digest()
    u = (int.from_bytes(h, "big") + 0.5) / 18446744073709551616.0
    return -math.log(u) / weight
