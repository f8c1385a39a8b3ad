"""What one admin write did (`Done`), as admin/writes.py runs it, how long its answer is
kept for retries with its Idempotency-Key, and the answer a write whose commit's answer was
lost carries (`answered_if_landed`). Pure."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import NotDurable, StoreOutcomeUnknown
from gateway.errors_cut import CutAfterCommit

if TYPE_CHECKING:
    from gateway.domain.statedoc import StateDoc

__all__ = ["IDEMPOTENCY_TTL", "Done", "Op", "answered_if_landed", "kept", "until"]

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


@contextlib.contextmanager
def answered_if_landed(
        answer: Callable[[StateDoc, dict[str, Any] | None], Done]) -> Iterator[None]:
    """A write (an approval's step, its request too) whose commit's answer was lost (503
    outcome_unknown) carries the answer it would have made, as a direct write's does
    (admin/api.py): its
    Idempotency-Key then names the write, and a retry answers with it, a replay, if the
    step landed (a retried request ran again, unmarked as a replay; a retried final
    approve answered 404 unknown_approval, a retried decline the same, a retried
    approval 409 already_approved: the key was let go, and the step ran again)."""
    try:
        yield
    except (StoreOutcomeUnknown, NotDurable, CutAfterCommit) as exc:
        # (not_durable: committed, not yet on a replica; a retry once it is confirmed)
        if exc.doc is not None and exc.event is not None:
            exc.done = answer(exc.doc, exc.event)
        raise
