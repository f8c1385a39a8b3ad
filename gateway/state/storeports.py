"""What a state store offers besides the document, by concern (state/store.py's `Store`
is all of them): heartbeats and acks (`FleetStore`), idempotency records
(`IdempotencyStore`), analysis and shadow counts (`StatsStore`) and reading the audit trail
(`AuditStore`). Parts of the gateway take the narrowest one they use. Declarations only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.state.signing import Keyring
    from gateway.state.store import Replicas

__all__ = ["AuditStore", "FleetStore", "IdempotencyStore", "StatsStore"]


class FleetStore(Protocol):
    #: when (monotonic) the newest heartbeat signed with a key id this instance does not
    #: hold was written, by the store's stamp (None: none read; keyconfirm.py)
    other_key_at: float | None
    #: heartbeats the last fleet read left unread: the hash is flooded (redis: over
    #: fleetscan.SCAN_BUDGET entries, read in bounded steps; 0 otherwise)
    flooded: int

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

    async def replicas(self) -> Replicas:
        """How many replicas the primary holds in sync (with `state.min_replicas`; asked at
        the heartbeat's pace, never on a request's path), or why that is not known. Never
        raises."""

    def stopping(self) -> None:
        """The instance is stopping: a heartbeat not yet in place is not put there, nor
        waited for (a stop joins the threads a local store's heartbeats run in)."""


class IdempotencyStore(Protocol):
    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None:
        """Store `record` under an idempotency key unless one exists; return the existing."""

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None: ...

    async def idem_settle(self, key: str, record: dict[str, Any], ttl: float) -> bool:
        """Store `record` only while the key's record is still held by `record["holder"]`
        (the claim, or this holder's earlier answer); False, and nothing written, when
        it is another's (a retry took the claim after it lapsed)."""

    async def idem_renew(self, key: str, record: dict[str, Any], ttl: float) -> bool:
        """Keep `record` another `ttl` if it is still what the key holds (a claim not lost
        to another's since it lapsed); False when it is not."""

    async def idem_take(self, key: str, mine: dict[str, Any], record: dict[str, Any],
                        ttl: float) -> bool:
        """Replace the key's record with `record` only while it is still `mine` (one
        compare-and-set: of two retries taking over a record, one does)."""

    async def idem_release(self, key: str, mine: dict[str, Any] | None = None) -> None:
        """Drop the key's record (with `mine`: only while it is still that one)."""


class StatsStore(Protocol):
    #: per counts hash (route key): the entries its last read left unread, the hash flooded
    #: (redis: over fleetscan.SCAN_BUDGET entries, read in bounded steps; None or absent:
    #: none)
    stats_flooded: dict[str, int] | None

    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        """Publish this instance's window counts for a route (canary analysis)."""

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        """Every instance's latest window counts for a route (those that verify)."""

    async def drop_stats(self, route: str, instances: list[str]) -> None:
        """Forget these instances' counts (gone instances' leftovers)."""


class AuditStore(Protocol):
    #: the keys events are MAC'd with: what is read back to act on is checked with them
    audit_keys: Keyring

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
        """The newest event's hash as anchored by the (verified) state document, so events
        cut off the end are noticed. None: no verified document names one."""

    async def audit_newest(self, limit: int) -> tuple[str | None, list[dict[str, Any]],
                                                      str | None]:
        """`audit_head` and `audit_page(limit, None)`, read so that they agree as far as
        the backend can tell (a write landing between them: read again)."""
