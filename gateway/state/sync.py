"""Keeps this instance's in-memory state in step with the store: the sync loop.

Owns the background task that (re)connects, subscribes first and then loads, polls the
generation and audit head every `poll_interval` (the only delivery guarantee: pub/sub
drops messages during reconnects), applies verified documents and acks them, re-seeds a
store that lost or spoiled its state (reseed.py), and enforces `on_unavailable`
(staleness.py). Pushed documents and re-reads live in syncpushes.py, heartbeats and
receipts in fleet.py, the snapshot file in snapshot.py, the audit mirror in mirror.py,
writes in writes.py, start-up and stop in startup.py, its status in syncreads.py, the
swaps' log lines in appliedlog.py. Invariants: only verified documents
are applied, and only when newer than the one held; a push that would relax anything (lift
a kill, change an override), or is too large to verify on the loop, is a hint: the store
is re-read and verified first; a document that would drop something held and does not
descend from it (another epoch, or another branch: domain/branches.py; reseed.py's
`_foreign_to`) is merged by a re-seed, never adopted; a re-seed copies nothing unverified
but kills; the data plane never waits for any of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.config import StateConfig
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import (
    AuditError,
    PushesCut,
    StateError,
    StoreConflict,
    StoreFromNewerVersion,
    StoreRefusesWrites,
    StoreUnverifiable,
)
from gateway.log import event
from gateway.state.appliedlog import AppliedLog
from gateway.state.contention import BACKOFF_MAX, Backoff
from gateway.state.durability import ReplicaWatch
from gateway.state.fleet import Fleet
from gateway.state.heardloss import HeardLoss
from gateway.state.holder import Holder
from gateway.state.localmerge import LocalKillKeeper
from gateway.state.mirror import AuditMirror
from gateway.state.reseed import Repair
from gateway.state.retention import AuditRetention
from gateway.state.signing import Keyring
from gateway.state.snapshot import SnapshotFile
from gateway.state.staleness import Guard
from gateway.state.startup import Startup
from gateway.state.store import Store
from gateway.state.syncpushes import Pushes
from gateway.state.syncreads import Reads
from gateway.state.tamper import TamperLog
from gateway.state.throttle import Throttle
from gateway.state.vouchwrite import VouchWrite
from gateway.state.writesrefused import WritesRefused
from gateway.telemetry.metrics import Metrics

__all__ = ["BACKOFF_MAX", "Sync"]

log = logging.getLogger("killgate.state")

#: seconds from a swap to its ack (the signed heartbeat receipts wait on). An ack is a script
#: on Redis and a message to every instance: sent at once, the first instances to swap wake
#: Redis and the whole fleet again while the others still wait for a vCPU to swap theirs.
#: Measured (killswitch.py --against, 3 instances, 2 vCPUs, interleaved): 1 ms: kill -0.25
#: ms p50, round trip +0.47; 2 ms: -0.84, +1.39; 3 ms: -0.56, +2.2 (RESULTS "Stop 21")
ACK_AFTER = 0.002


class Sync(Repair, Guard, VouchWrite, WritesRefused, Startup, Reads, Pushes, HeardLoss):
    """The sync loop; re-seeds (reseed.py), the staleness guard (staleness.py), writes
    (writes.py), start-up (startup.py), what it tells (syncreads.py) and what it does with
    a pushed document (syncpushes.py) are its mixins (Pushes last: its stand-ins for
    methods of Sync and the other mixins must not shadow them)."""

    def __init__(self, store: Store, holder: Holder, metrics: Metrics, instance: str,
                 cfg: StateConfig, snapshot: SnapshotFile, tamper: TamperLog,
                 keys: Keyring, mirror: AuditMirror | None = None,
                 retention: AuditRetention | None = None) -> None:
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.instance = instance
        self.cfg = cfg
        self.snapshot = snapshot
        self.tamper = tamper
        self.keys = keys
        self.mirror, self.retention = mirror, retention
        self.peers = Fleet(store, holder, cfg, instance, store.pushes)
        self.durability = ReplicaWatch(store, cfg)  # (min_replicas: the primary's replicas)
        self.ready = False
        self.connected = False
        #: the last attempt's answer was a document this instance cannot verify
        #: (StoreUnverifiable): not synced, but the store answers (staleness.py's gauge)
        self.answering = False
        #: ... and a newer version of killgate wrote it (StoreFromNewerVersion): no key
        #: problem (`killgate status` said "check state.signing_key_env" mid-upgrade)
        self.newer_version = False
        #: the last attempt read the store, but its subscription (the pushes) was refused
        #: or cut as it was made (PushesCut): reads at a poll's pace, not "unreachable"
        self.pushes_cut = False
        self.synced_once = False
        self.from_snapshot = False
        self.last_error: str | None = None
        self.started_at = time.monotonic()
        self.last_ok: float | None = None
        self.stale = False  # past max_staleness: the alarm (whatever the policy)
        #: the store lost events this instance had anchored (a flush, a restore): when, which
        self.trail_lost: dict[str, Any] | None = None
        self.unverifiable: str | None = None  # (vouching.py's `_blind`: not ready)
        self._pending_audit: list[AuditDraft] = []
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._recheck: asyncio.Task[None] | None = None
        self._stopping = False  # stop() began: pushes still apply, but start no tasks
        self._unsaved: StateDoc | None = None  # applied once stopping: snapshotted last
        self._recheck_again = False
        self._big_pushes = Throttle(0.25, self._reread)  # (store.PushNotRead)
        self._seen_signed = False
        #: epochs this instance created, oldest first (vouching.py's _blind and OWN_EPOCHS)
        self._own_epochs: dict[str, None] = {}
        self._epoch_from: dict[str, int] = {}  # (vouching.py: each own epoch's start)
        self._seen_fleet = False  # verified a document of an epoch not in _own_epochs
        snapshot.origin = self._origin  # (what each snapshot written says of its state)
        self._repairs, self._repair_at = 0, 0.0  # repairs in a row of refused documents (backoff)
        self._resync = False  # a document colliding with ours was seen: sync at the next poll
        self._foreign: set[str] = set()  # their epochs (reseed.py's _foreign_to)
        self._judged: str | None = None  # the head a full sync's poll read, or a push named
        self.applied_log = AppliedLog()  # the swaps' `state_applied` lines, written late
        #: told about every audited change this instance commits (outgoing events)
        self.committed: list[Callable[[dict[str, Any], StateDoc], None]] = []
        #: emergency local kills (localmerge.py; set by make_sync: None in tests' Syncs)
        self.local: LocalKillKeeper | None = None
        store.listen(self._pushed)

    @property
    def acks(self) -> dict[str, int]:
        return self.peers.acks

    @property
    def migrating(self) -> bool:
        """Neither our snapshot nor the store has shown us a signed document yet: the one
        time a re-seed may keep the kills of an unsigned (pre-signing) document."""
        return self.keys.enabled and not self.snapshot.signed and not self._seen_signed

    # ------------------------------------------------------------------ lifecycle

    def _update_ready(self) -> None:
        self.ready = self.synced_once or self.from_snapshot or self.cfg.ready_without_state
        # the data plane opens with readiness, in the same step (after the state's swap)
        if self.ready and self.holder.state_loaded():
            event(log, "kill_state_loaded", generation=self.holder.doc.generation,
                  source="store" if self.synced_once else "snapshot" if self.from_snapshot
                  else "none (ready_without_state)")

    def _spawn(self, coro: Any) -> None:
        if self._stopping:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ------------------------------------------------------------------ applying

    def _apply(self, doc: StateDoc) -> bool:
        """Adopt a verified document (ours, pushed or loaded) if newer; its log line (when
        the swap happened) is written a little later (appliedlog.py)."""
        self._seen_signed = True
        self._saw(doc)
        before = self.holder.doc
        if not self.holder.apply_doc(doc):
            return False
        self._heard_of(before, doc)  # (another instance's re-seed: a loss it reported)
        self._judged = None  # (a head judged of the document before)
        self.metrics.set("killgate_state_generation", doc.generation)
        if self._stopping:
            self._unsaved = doc
        self.applied_log.later(doc.generation, sorted(doc.kills), round(time.time(), 6))
        return True

    async def _after_apply(self, doc: StateDoc) -> None:
        """Ack once the fleet's burst of swaps has passed (ACK_AFTER, with a store that
        pushes: a local store's ack wakes nobody; receipts wait on it), write the swap's
        log line, then make the state durable locally."""
        if self.store.pushes:
            await asyncio.sleep(ACK_AFTER)
        try:
            await self._beat()  # (refused by a store that takes no write: said, not raised)
        except StateError as exc:
            self.last_error = str(exc)
        self.applied_log.flush(doc.generation)  # (a later swap's line waits for its ack)
        self.snapshot.soon(doc)

    def _durable_later(self, doc: StateDoc) -> None:
        """`doc` (held already) made durable locally after ACK_AFTER, like an apply's
        (at once when stopping: no side task starts then)."""
        if self._stopping or not self.store.pushes:
            self.snapshot.soon(doc)
        else:
            self._spawn(self._snapshot_after(doc))

    async def _snapshot_after(self, doc: StateDoc) -> None:
        await asyncio.sleep(ACK_AFTER)
        self.snapshot.soon(doc)

    # ------------------------------------------------------------------ syncing

    async def _run(self) -> None:
        backoff = Backoff(BACKOFF_MAX)  # (contention.py: the first sync's rule too)
        while True:
            try:
                if not self.connected:
                    await self._connect_and_sync(reopen=not self.answering)
                    event(log, "state_store_connected", generation=self.holder.doc.generation)
                    backoff.reset()
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except StoreRefusesWrites as exc:
                if not self.connected:  # (as it connected: an attempt that failed)
                    self.last_error = str(exc)
                    await self.store.reset()
                self._refused_writes(exc)  # (else its reads work: synced still, said once)
                backoff.at_most(self.cfg.poll_interval)
                await backoff.wait()
            except Exception as exc:  # noqa: BLE001 - see below
                if not isinstance(exc, (StateError, AuditError, OSError)):
                    # a bug (ours, or a library's) must not end syncing: this loop is what
                    # brings every later kill to this instance
                    event(log, "state_sync_error", logging.ERROR, error=repr(exc))
                    backoff.at_least(1.0)  # a bug that repeats: once a second at most
                elif isinstance(exc, StoreUnverifiable):
                    # the store answers, with a document this instance cannot verify (most
                    # often its key is not the fleet's): not "lost", and its connections
                    # are kept (each attempt reconnected a healthy store); said once
                    if not self.answering:
                        event(log, "state_store_unverifiable", logging.WARNING,
                              error=str(exc))
                elif self.connected:
                    event(log, "state_store_lost", logging.WARNING, error=str(exc))
                self.connected = False
                self.answering = isinstance(exc, StoreUnverifiable)
                self.newer_version = isinstance(exc, StoreFromNewerVersion)
                self.pushes_cut = isinstance(exc, PushesCut)
                self.last_error = str(exc) or type(exc).__name__
                if isinstance(exc, PushesCut):  # (the store was read: again at a poll's pace)
                    backoff.at_most(self.cfg.poll_interval)
                if not self.answering:
                    self.peers.watching_since = None
                    await self.store.reset()
                else:
                    await self._beat_unverifiable()
                await backoff.wait()

    async def _cycle(self) -> None:
        """One poll interval: take pushed changes as they arrive, then check the generation."""
        deadline = time.monotonic() + self.cfg.poll_interval
        while (left := deadline - time.monotonic()) > 0:
            for item in await self.store.watch(left):
                self._pushed(item)
        held = self.holder.doc  # read first: what we hold only grows
        gen, head = await self.store.poll()  # a head we never judged: another document at
        synced = True  # our generation; or ours put back before the events we judged since
        if self._resync or gen != str(held.generation) \
                or head not in (None, self._judged or held.audit_head):
            synced = await self._full_sync()
            self._judged = head
            if synced:  # (a repair healed it here, not at a reconnect: a refusal of the
                self.last_error = None  # store's document, now ours again, is not news)
        if synced:  # (a store we refuse answered, but told us nothing: still stale)
            self._touch()
        if self.peers.due():
            await self._beat()  # (refused by a store that takes no write: said, not raised)
        if self.durability.due():  # (min_replicas: one command a heartbeat interval)
            await self.durability.check()
        while self._pending_audit and not self._write_lock.locked():  # (see append_audit)
            try:
                if await self.append_audit(self._pending_audit[0], patience=0) is None:
                    break  # (no verified state to append to yet: kept, not dropped)
            except StoreRefusesWrites as exc:
                self._refused_writes(exc)
                break  # (kept for a store that takes writes again)
            except StoreConflict:
                break  # (lost MIN_ATTEMPTS races, a few ms apart (contention.py), to other
                # instances' appends: kept for the next cycle, not 2 s more of this loop's
                # time; raised, it took a healthy store for lost and reconnected)
            self._pending_audit.pop(0)
