"""What the sync loop tells the admin API: receipts, the fleet, and its status.

Owns `Reads`, a mixin of `Sync` (sync.py) over its state, declared here: a write's receipt
(every live instance having applied a generation), the fleet's members, and the store,
staleness, verification and audit status `/v1/status` shows.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.config import StateConfig
from gateway.state.durability import ReplicaWatch
from gateway.state.fleet import Fleet
from gateway.state.holder import Holder
from gateway.state.keyconfirm import key_unconfirmed
from gateway.state.localmerge import LocalKillKeeper
from gateway.state.mirror import AuditMirror
from gateway.state.retention import AuditRetention
from gateway.state.signing import Keyring
from gateway.state.snapshot import SnapshotFile
from gateway.state.store import Store
from gateway.state.tamper import TamperLog

__all__ = ["Reads"]


class Reads:
    store: Store
    holder: Holder
    cfg: StateConfig
    snapshot: SnapshotFile
    mirror: AuditMirror | None
    retention: AuditRetention | None
    peers: Fleet
    durability: ReplicaWatch
    keys: Keyring
    tamper: TamperLog
    instance: str
    local: LocalKillKeeper | None
    connected: bool
    answering: bool
    newer_version: bool
    pushes_cut: bool
    writes_refused: str | None
    synced_once: bool
    from_snapshot: bool
    stale: bool
    last_error: str | None
    trail_lost: dict[str, Any] | None
    unverifiable: str | None

    def staleness(self) -> float:
        raise NotImplementedError


    async def receipt(self, generation: int, wait: float) -> dict[str, Any]:
        """Wait until every live instance has applied `generation` (or `wait` runs out)."""
        return await self.peers.receipt(generation, wait)

    async def fleet(self) -> dict[str, dict[str, Any]]:
        """Every live instance with the generation and config digest it runs."""
        return await self.peers.members()

    def key_unconfirmed(self) -> str | None:
        """Why this instance's key is not confirmed by another instance's heartbeat
        (keyconfirm.py): refused ones come, with a key id it does not hold, and none verifies.
        A refused ack counts when it came (pushed: sent as it came), a stored heartbeat when
        the store stamped it (read later, a dead instance's said a lone one unconfirmed for
        a lease after each of its starts up to 10 leases after the death)."""
        refused = max((t for t in (self.tamper.at.get("ack/unknown_key_id"),
                                   self.store.other_key_at) if t is not None), default=None)
        return key_unconfirmed(self.instance, self.peers.heard, refused, time.monotonic(),
                               self.cfg.instance_lease)

    def _pushes(self) -> str | None:
        if not self.store.pushes:
            return "none" if self.connected else None
        return "live" if self.connected else "cut" if self.pushes_cut else None

    def status(self) -> dict[str, Any]:
        keys = self.keys
        return {
            "backend": self.store.backend, "connected": self.connected,
            # (not connected, but the store answered: a document this instance cannot
            # verify; `unverifiable` below is set only while it holds no state)
            "answering": not self.connected and self.answering,
            # (... with a document a newer version of killgate wrote: an upgrade to finish)
            "newer_version": not self.connected and self.answering and self.newer_version,
            # how changes reach it: "live" (pushed, and polled), "cut" (its subscription
            # refused or cut while its reads of the store verify: read every poll_interval,
            # not unreachable), "none" (a store that does not push), None (not reached)
            "pushes": self._pushes(),
            # with min_replicas: {"connected": N, "required": M}, the primary's replicas in
            # sync as the heartbeat last asked (fewer: writes answered 503 not_durable);
            # null, and `replicas_unknown` says why, while not known (durability.py)
            **self.durability.status(),
            # why the store refuses every write while its reads work (redis's own
            # min-replicas-to-write: -NOREPLICAS; writesrefused.py), null while it takes them
            "writes_refused": self.writes_refused if self.connected else None,
            "staleness_ms": round(self.staleness() * 1000, 1), "policy": self.cfg.on_unavailable,
            "max_staleness_ms": round(self.cfg.max_staleness * 1000), "stale": self.stale,
            # (a drill asking whether it applied a restore gives it a poll of its own to
            # catch up: control/drillbehind.py)
            "poll_interval_ms": round(self.cfg.poll_interval * 1000),
            "fail_closed": self.holder.fail_closed, "synced": self.synced_once,
            "from_snapshot": self.from_snapshot, "epoch": self.holder.doc.epoch,
            "last_error": self.last_error, "snapshot": self.snapshot.status(),
            # emergency local kills not yet in the store (localmerge.py): loud everywhere
            "local_kills": self.local.public() if self.local is not None else None,
            "unverifiable": self.unverifiable,
            "key_unconfirmed": self.key_unconfirmed(),
            "verification": {
                "signed": keys.enabled,
                "key_id": keys.current.kid if keys.current else None,
                "previous_key_id": keys.previous.kid if keys.previous else None,
                "retired_key_ids": sorted(keys.retired),
                # (the heartbeats the last fleet read left for later reads: fleetscan.py)
                "flooded": self.store.flooded,
                # (the same of each analysis counts hash, by its key: redisstats.py)
                "flooded_counts": dict(self.store.stats_flooded or {}),
                **self.tamper.status()},
            "audit": {"anchored_head": self.holder.doc.audit_head or None,
                      "trail_lost": self.trail_lost,
                      "mirror": self.mirror.status() if self.mirror is not None else None,
                      "retention": self.retention.status() if self.retention else None},
        }
