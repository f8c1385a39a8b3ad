"""The replicated state: one sync loop over one of two stores, chosen from config.

`local` (one host: files) or `redis` (many hosts); both implement `store.Store`, and
`sync.Sync` is what the rest of the gateway talks to. The signing keys are read here,
from the environment or files named in the config (never from the store), and handed to
every part that signs or verifies. Nothing outside `gateway.state` imports redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.configfile import LoadedConfig
    from gateway.state.holder import Holder
    from gateway.state.mirror import Alarm
    from gateway.state.sync import Sync
    from gateway.telemetry.metrics import Metrics

__all__ = ["make_sync"]


def make_sync(loaded: LoadedConfig, holder: Holder, metrics: Metrics,
              instance: str, alarm: Alarm | None = None) -> Sync:
    """Build the store and the sync loop; raises ConfigError when a key cannot be read."""
    from gateway.configfile import state_file_problems
    from gateway.errors import ConfigError
    from gateway.state.local import LocalStore
    from gateway.state.mirror import AuditMirror
    from gateway.state.signing import Cause, audit_keyring, signing_keyring
    from gateway.state.snapshot import SnapshotFile
    from gateway.state.sync import Sync
    from gateway.state.tamper import TamperLog

    cfg = loaded.config.state
    if problems := state_file_problems(loaded):
        raise ConfigError(problems)
    keys = signing_keyring(cfg, loaded.resolve)
    audit_keys = audit_keyring(cfg, loaded.resolve, keys)
    tamper = TamperLog(metrics)

    def report(kind: str, problem: str, which: str | None, cause: Cause = "other") -> None:
        if which == "previous":
            tamper.accepted_previous(kind)
        else:
            tamper.note(kind, problem, cause)

    store: Any
    if cfg.backend == "redis":
        from gateway.state.redis import RedisStore

        # our own heartbeat comes back on the acks channel every heartbeat_interval: a
        # subscription silent for 3 of them is dead even if its socket looks open
        store = RedisStore(cfg.url, cfg.prefix, cfg.command_timeout,
                           silence=3 * cfg.heartbeat_interval + cfg.command_timeout,
                           keys=keys, audit_keys=audit_keys, on_unverified=report)
        store.beat_lease = cfg.instance_lease
    else:
        store = LocalStore(loaded.resolve(cfg.path), keys=keys, audit_keys=audit_keys,
                           on_unverified=report,
                           routes=frozenset(r.name for r in loaded.config.routes))
    mirror = None
    if cfg.audit_mirror:
        mirror = AuditMirror(store, loaded.resolve(cfg.audit_mirror), audit_keys, metrics,
                             cfg.poll_interval, alarm)
    retention = None
    if cfg.audit_retention is not None:
        from gateway.state.retention import AuditRetention

        retention = AuditRetention(store, cfg.audit_retention, audit_keys, mirror)
    snapshot = SnapshotFile(loaded.resolve(cfg.snapshot_path), keys, report, lambda: metrics.inc(
        "killgate_state_snapshot_write_failures_total"))
    # (a failed write is not tried again until the next change: the counter alone moves
    # once, and an alert on its increase would resolve while the file stays old)
    metrics.collector(lambda m: m.set("killgate_state_snapshot_failing",
                                      0.0 if snapshot.error is None else 1.0))
    sync = Sync(store, holder, metrics, instance, cfg, snapshot, tamper, keys, mirror,
                retention)
    metrics.collector(sync.durability.export)  # (min_replicas: killgate_state_replicas)
    from gateway.state.localkills import LocalKills, journal_path
    from gateway.state.localmerge import LocalKillKeeper

    # emergency local kills: taken while the store cannot commit, merged when it returns
    sync.local = local = LocalKillKeeper(sync, LocalKills(journal_path(snapshot.path), keys),
                                         holder.set_local_kills)
    metrics.collector(lambda m: m.set("killgate_local_kills", float(local.not_in_store)))
    return sync
