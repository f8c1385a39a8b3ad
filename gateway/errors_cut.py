"""A write cut by a stop after its commit (`CutAfterCommit`). Its own module, not errors.py
or errors_store.py: it is a CancelledError, and the domain, which imports those, imports no
event loop."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["CutAfterCommit"]


class CutAfterCommit(asyncio.CancelledError):
    """A write cancelled (its instance stopping: the admin listener's answers cut at its
    shutdown timeout) after its commit, while it waited for its replicas: in force, not
    confirmed, as NotDurable says, and still a cancellation. `event`, `doc`, `done`: as
    NotDurable's (its Idempotency-Key keeps the answer for a retry)."""

    def __init__(self, event: dict[str, Any] | None, doc: Any) -> None:
        super().__init__("cancelled after its commit, waiting for its replicas")
        self.event, self.doc = event, doc
        self.done: Any = None
