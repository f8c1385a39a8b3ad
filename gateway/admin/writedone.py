"""What one admin write did (`Done`), as admin/writes.py runs it, and how long its answer
is kept for retries with its Idempotency-Key. Pure."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["IDEMPOTENCY_TTL", "Done", "Op", "kept", "until"]

IDEMPOTENCY_TTL = 24 * 3600.0  # an answer, kept for retries


@dataclass(frozen=True, slots=True)
class Done:
    """What a write did: the answer's fields, its status, and the generation to wait for
    (None: nothing to propagate, e.g. an approval request)."""

    body: dict[str, Any]
    generation: int | None
    status: int = 200
    event: dict[str, Any] | None = None  # the audit event it recorded, if any
    #: how long a retry with its Idempotency-Key is answered with it (None: a day); an
    #: approval request's answer only while that request can be open
    keep: float | None = None
    #: the scope a replay of this answer needs (None: the caller's key is enough), for an
    #: answer whose scope was read from state the write then removed (an approval step)
    scope: str | None = None


Op = Callable[[], Awaitable[Done]]


def kept(done: Done) -> float:
    """How long a write's answer is kept for retries with its key."""
    return IDEMPOTENCY_TTL if done.keep is None else min(IDEMPOTENCY_TTL, max(1.0, done.keep))


def until(record: dict[str, Any]) -> float:
    """How long more the answer a lost attempt's record holds is kept (Done.keep)."""
    until = record.get("until")
    if not isinstance(until, (int, float)):
        return IDEMPOTENCY_TTL
    return min(IDEMPOTENCY_TTL, max(1.0, until - time.time()))
