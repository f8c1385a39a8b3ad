"""The replicated state as the rest of the gateway sees it: one interface, two stores.

Owns the `StateSync` protocol (what app, admin and proxy may ask of the state) and the
factory choosing the implementation from config: `local` (one host, a file) or `redis`
(many hosts). Nothing outside `gateway.state` imports redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.config import LoadedConfig
    from gateway.metrics import Metrics
    from gateway.snapshot import TableHolder

__all__ = ["StateSync", "make_sync"]


class StateSync(Protocol):
    ready: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class _Static:
    """Config only: no replicated state (used until a store is configured)."""

    ready = True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"backend": "none", "connected": True, "staleness_ms": 0, "policy": "last_known"}


def make_sync(loaded: LoadedConfig, holder: TableHolder, metrics: Metrics,
              instance: str) -> StateSync:
    return _Static()
