"""Start-up and stop of the sync loop: the snapshot, then sync attempt after attempt until a
deadline; at stop, what was applied lands in the snapshot and the applied log.

A reply that misses `command_timeout` (a loaded host, a Redis busy for a moment) fails an
attempt, not the start; at `max(start_timeout, 4 x command_timeout)` the instance opens
without the store (its snapshot, `ready_without_state`, or 503 state_unknown), one
`state_store_unavailable_at_start` line saying why. Then the sync loop, the staleness guard,
the audit mirror and audit retention run as tasks. Mixed into `Sync` (state/sync.py),
after its other mixins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.config import StateConfig
from gateway.domain.statedoc import StateDoc
from gateway.errors import (
    AuditError,
    PushesCut,
    StateError,
    StoreFromNewerVersion,
    StoreUnverifiable,
)
from gateway.log import event
from gateway.state.appliedlog import AppliedLog
from gateway.state.contention import Backoff
from gateway.state.fleet import Fleet
from gateway.state.holder import Holder
from gateway.state.localmerge import LocalKillKeeper
from gateway.state.mirror import AuditMirror
from gateway.state.retention import AuditRetention
from gateway.state.snapshot import SnapshotFile
from gateway.state.store import Store
from gateway.state.throttle import Throttle
from gateway.tasks import cancel

#: seconds, at most, between first-sync attempts (x 0.5-1.5): half the sync loop's, a start
#: has a deadline (`start_timeout`) to make
FIRST_SYNC_BACKOFF_MAX = 0.5

__all__ = ["Startup"]

log = logging.getLogger("killgate.state")


class Startup:
    store: Store
    holder: Holder
    cfg: StateConfig
    snapshot: SnapshotFile
    mirror: AuditMirror | None
    retention: AuditRetention | None
    peers: Fleet
    connected: bool
    answering: bool
    newer_version: bool
    pushes_cut: bool
    synced_once: bool
    from_snapshot: bool
    last_error: str | None
    instance: str
    applied_log: AppliedLog
    _tasks: list[asyncio.Task[None]]
    _side_tasks: set[asyncio.Task[None]]
    _stopping: bool
    _unsaved: StateDoc | None
    _big_pushes: Throttle
    _own_epochs: dict[str, None]
    _epoch_from: dict[str, int]
    local: LocalKillKeeper | None
    #: (heardloss.py, after this mixin in Sync's bases: declared, not stubbed, so that
    #: its method is the one called)
    _look_back: Callable[[], None]

    async def start(self) -> None:
        snap = await asyncio.to_thread(self.snapshot.read)
        self._own_epochs.update(dict.fromkeys(self.snapshot.own_epochs))  # (its origin's)
        for epoch in self.snapshot.own_epochs:  # (writes past what it read count: vouching.py)
            self._epoch_from.setdefault(epoch, snap.generation if snap is not None else 0)
        if snap is not None:
            self.holder.apply_doc(snap)
            self.store.anchored(snap)  # (the newest audit head this instance knew)
            self.from_snapshot = True
            event(log, "snapshot_loaded", generation=snap.generation, kills=sorted(snap.kills),
                  signed=self.snapshot.signed)
            if self.snapshot.previous_key:  # (a key rotation: written again with our key)
                self.snapshot.soon(snap)
        if self.local is not None:  # (enforced before the routes open: localmerge.py)
            await self.local.load()
        try:
            await self._first_sync()
        except TimeoutError:
            self.connected = self.pushes_cut = False
            event(log, "state_store_unavailable_at_start", logging.WARNING, error=self.last_error,
                  serving="snapshot" if self.from_snapshot else
                  "config only (ready_without_state)" if self.cfg.ready_without_state else
                  "nothing: 503 state_unknown until the kill state is loaded")
        self._update_ready()
        self._tasks = [asyncio.create_task(self._run(), name="state-sync"),
                       asyncio.create_task(self._guard(), name="state-guard")]
        if self.local is not None:
            self._tasks.append(asyncio.create_task(self.local.run(self.cfg.poll_interval),
                                                   name="local-kills"))
        if self.mirror is not None:
            self._tasks.append(asyncio.create_task(self.mirror.run(), name="audit-mirror"))
        if self.retention is not None:
            self._tasks.append(asyncio.create_task(self.retention.run(), name="audit-retention"))

    async def stop(self) -> None:
        self._stopping = True
        self.store.stopping()  # (a heartbeat of an apply's side task: not waited for)
        self._big_pushes.cancel()
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=2 * self.cfg.command_timeout)
        await self.snapshot.flush()  # the last snapshot lands
        self.applied_log.flush()  # (a line whose timer has not fired yet)
        await cancel(self._tasks)
        self._tasks = []
        with contextlib.suppress(StateError, TimeoutError):
            await asyncio.wait_for(self.store.leave(self.instance), self.cfg.command_timeout)
        await self.store.close()
        if self._unsaved is not None:  # (no side task snapshots what applied since stop began)
            self.snapshot.soon(self._unsaved)
            await self.snapshot.flush()
        self.applied_log.flush()  # (and no push comes now)

    async def _first_sync(self) -> None:
        """Attempt after attempt until the start deadline; TimeoutError at the deadline."""
        budget = max(self.cfg.start_timeout, 4 * self.cfg.command_timeout)
        attempts, backoff = 0, Backoff(FIRST_SYNC_BACKOFF_MAX)
        try:
            async with asyncio.timeout(budget):
                while True:
                    attempts += 1
                    try:
                        return await self._connect_and_sync()
                    except (StateError, AuditError) as exc:
                        self.last_error = str(exc) or type(exc).__name__
                        self.answering = isinstance(exc, StoreUnverifiable)
                        self.newer_version = isinstance(exc, StoreFromNewerVersion)
                        self.pushes_cut = isinstance(exc, PushesCut)
                        if isinstance(exc, PushesCut):
                            return  # (the store was read: the sync loop subscribes again)
                        await self._beat_unverifiable()
                    await backoff.wait()
        except TimeoutError:
            self.last_error = (f"no sync within {budget:g}s, {attempts} attempt(s); last: "
                               f"{self.last_error or 'no answer'}")
            raise

    async def _connect_and_sync(self, reopen: bool = True) -> None:
        """One attempt (also the sync loop's reconnect): open, watch, load, beat.
        `reopen=False`: the last attempt's answer was a document this instance cannot
        verify (the store answers: nothing to reconnect): the connections are kept (checked:
        `kept`) and the document read again."""
        cut: PushesCut | None = None
        if reopen:
            self.peers.watching_since = None
            try:
                await self.store.open()
            except PushesCut as exc:  # (its subscription cut as it was made: the store is
                cut = exc  # read all the same, as a poll reads it, and raised after)
            else:
                self.peers.watching_since = time.monotonic()
        else:
            await self.store.kept()
        synced = await self._full_sync()
        if not self.synced_once:  # (a loss a re-seed before this process started reported)
            self._look_back()
        self.connected, self.answering, self.pushes_cut = cut is None, False, cut is not None
        self.synced_once = True
        self._update_ready()
        if synced:  # (else the store holds what we refuse: `last_error` says so)
            self.last_error = None
            self._touch()
        if cut is not None:  # (its heartbeat when due, as the poll's: alive, and applied)
            if self.peers.due():
                with contextlib.suppress(StateError):
                    await self.peers.beat()
            raise cut
        await self._beat()  # (refused by a store that takes no write: synced all the same)

    async def _beat_unverifiable(self) -> None:
        """After an attempt the store answered with a document this instance cannot verify
        (`answering`: most often its key is not the fleet's), a heartbeat when one is due:
        raised before the attempt's own, it never went out, and with no snapshot to start
        on, nothing else of it did either: the fleet heard nothing of an instance it would
        refuse (store.verification counted nothing; only its own /readyz said anything).
        Its heartbeat, refused by the fleet (another key id), is how the fleet sees it."""
        if self.answering and self.peers.due():
            with contextlib.suppress(StateError):
                await self.peers.beat()

    # provided by Sync and its other mixins (which come first in its bases)
    async def _beat(self) -> None:
        raise NotImplementedError

    async def _full_sync(self) -> bool:
        raise NotImplementedError

    def _update_ready(self) -> None:
        raise NotImplementedError

    def _touch(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError

    async def _guard(self) -> None:
        raise NotImplementedError
