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

    async def write(self, change: Any, describe: Any) -> tuple[Any, dict[str, Any] | None]: ...

    async def receipt(self, generation: int, wait: float) -> dict[str, Any]: ...


def make_sync(loaded: LoadedConfig, holder: TableHolder, metrics: Metrics,
              instance: str) -> StateSync:
    from gateway.state.local import LocalStore
    from gateway.state.sync import Sync

    cfg = loaded.config.state
    store: Any
    if cfg.backend == "redis":
        from gateway.state.redis import RedisStore

        store = RedisStore(cfg.url, cfg.prefix, cfg.command_timeout)
    else:
        store = LocalStore(loaded.resolve(cfg.path))
    return Sync(store, holder, metrics, instance, cfg, loaded.resolve(cfg.snapshot_path))
