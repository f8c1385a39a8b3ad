"""The replicated state: one sync loop over one of two stores, chosen from config.

`local` (one host: files) or `redis` (many hosts); both implement `store.Store`, and
`sync.Sync` is what the rest of the gateway talks to. Nothing outside `gateway.state`
imports redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.configfile import LoadedConfig
    from gateway.control.table import TableHolder
    from gateway.state.sync import Sync
    from gateway.telemetry.metrics import Metrics

__all__ = ["make_sync"]


def make_sync(loaded: LoadedConfig, holder: TableHolder, metrics: Metrics,
              instance: str) -> Sync:
    from gateway.state.local import LocalStore
    from gateway.state.sync import Sync

    cfg = loaded.config.state
    store: Any
    if cfg.backend == "redis":
        from gateway.state.redis import RedisStore

        # our own heartbeat comes back on the acks channel every heartbeat_interval: a
        # subscription silent for 3 of them is dead even if its socket looks open
        store = RedisStore(cfg.url, cfg.prefix, cfg.command_timeout,
                           silence=3 * cfg.heartbeat_interval + cfg.command_timeout)
    else:
        store = LocalStore(loaded.resolve(cfg.path))
    mirror = loaded.resolve(cfg.audit_mirror) if cfg.audit_mirror else None
    return Sync(store, holder, metrics, instance, cfg, loaded.resolve(cfg.snapshot_path), mirror)
