"""The storage contract both state stores fulfil, and the restrictive merge used to re-seed.

Owns the `Store` protocol (what `Sync` may ask of a backend) and `merge_restrictive`,
the rule for rebuilding a store that lost its state: the union of every kill anyone
knows (only an explicit unkill lifts a kill), and the overrides and history of the
newest document. Pure apart from the protocol declaration.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc

__all__ = ["Ack", "Store", "merge_restrictive", "new_epoch"]


@dataclass(frozen=True, slots=True)
class Ack:
    instance: str
    generation: int


class Store(Protocol):
    backend: str
    #: True when the store pushes changes and acks (redis pub/sub); False: poll only.
    pushes: bool

    async def open(self) -> None:
        """Connect and start watching; raises StoreUnavailable. Called again to recover."""

    async def reset(self) -> None:
        """Stop watching after an error (writes may go on); `open` resumes."""

    async def close(self) -> None: ...

    async def load(self) -> StateDoc | None:
        """The whole state, or None when the store holds none (new, emptied or flushed)."""

    async def generation(self) -> int | None: ...

    async def commit(self, expected: int | None, doc: StateDoc,
                     draft: AuditDraft | None) -> dict[str, Any] | None:
        """Replace the state if its generation is still `expected` (None: must be empty).

        The audit event (if any) is chained and stored first, atomically with the state.
        Returns the sealed event. Raises StoreConflict when `expected` is stale,
        AuditError when the audit event cannot be stored (nothing changes then).
        """

    def listen(self, fn: Callable[[StateDoc | Ack], None]) -> None:
        """Hand pushed changes to `fn` as they arrive (a store that does not push ignores
        this; its `watch` returns the changes it finds)."""

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        """Changes since the last call, waiting up to `timeout` for the first; raises
        StoreUnavailable when the store's push channel is lost."""

    async def replicated(self, replicas: int, timeout: float) -> int:
        """After a commit: wait up to `timeout` until `replicas` replicas hold it; returns
        how many confirmed."""

    async def heartbeat(self, instance: str, applied: int, config: str = "",
                        urls: dict[str, str] | None = None) -> None:
        """Announce this instance, the generation it enforces (its ack), its config, and
        where it listens (`urls`: "data", "admin"; what drills reach it by)."""

    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        """Live instances → {"generation", "config" (digest), "seen_s_ago", and the
        "data" / "admin" URLs each published, when it did}."""

    async def live_instances(self, lease: float) -> dict[str, int]:
        """Instances heard from within `lease` seconds → the generation each applied."""

    async def leave(self, instance: str) -> None: ...

    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None:
        """Store `record` under an idempotency key unless one exists; return the existing."""

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None: ...

    async def idem_release(self, key: str) -> None: ...

    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        """Publish this instance's window counts for a route (canary analysis)."""

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        """Every instance's latest window counts for a route."""

    async def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event, oldest first."""

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` events after `cursor` (None: from the start), oldest first, and the
        cursor of the last one returned (unchanged when there is nothing new)."""

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        """Newest first: up to `limit` events older than `before`, and the next cursor."""

    async def audit_head(self) -> str | None:
        """The newest event's hash as recorded apart from the trail (Redis: its own key;
        local: inside the state file), so events cut off the end are noticed. None: no
        event was recorded with an anchor yet."""


def new_epoch() -> str:
    return secrets.token_hex(8)


def merge_restrictive(store: StateDoc | None, mine: StateDoc) -> StateDoc:
    """The state to re-seed a store with when its content is missing or older than ours.

    Every kill either side knows survives; overrides and history come from the newer
    document. The generation moves past both, so every instance applies the result.
    """
    if store is None:
        return mine.with_changes(epoch=new_epoch())
    newer, older = (mine, store) if mine.generation >= store.generation else (store, mine)
    kills = dict(older.kills)
    kills.update(newer.kills)
    gen = max(store.generation, mine.generation) + 1
    return newer.with_changes(kills=kills, generation=gen, epoch=new_epoch())
