"""What the sync loop does with a document the store hands it between polls.

Owns `Pushes`, a mixin of `Sync` (sync.py) over its state, declared here: a pushed change
or ack taken in the loop iteration that read it (a new kill in force before anything else
runs), a push that would relax anything or is too large to verify on the loop taken as a
hint to re-read the store (single flight), a document that collides with ours (another
epoch or branch: reseed.py's `_foreign_to`) merged by a re-seed, never adopted, and a
re-read's verified answer adopted if newer. Applying a document is `Sync._apply`.
"""

from __future__ import annotations

import asyncio

from gateway.domain.branches import relaxes
from gateway.domain.statedoc import StateDoc
from gateway.errors import AuditError, StateError
from gateway.state.fleet import Fleet
from gateway.state.holder import Holder
from gateway.state.snapshot import SnapshotFile
from gateway.state.store import Ack, Loaded, PushNewer, PushNotRead, Store
from gateway.state.throttle import Throttle
from gateway.telemetry.metrics import Metrics

__all__ = ["Pushes"]


class Pushes:
    store: Store
    holder: Holder
    metrics: Metrics
    snapshot: SnapshotFile
    peers: Fleet
    _stopping: bool
    _side_tasks: set[asyncio.Task[None]]
    _recheck: asyncio.Task[None] | None
    _recheck_again: bool
    _big_pushes: Throttle
    _resync: bool
    _judged: str | None

    # provided by Sync and its other mixins (reseed.py)
    def _apply(self, doc: StateDoc) -> bool:
        raise NotImplementedError

    def _spawn(self, coro: object) -> None:
        raise NotImplementedError

    async def _after_apply(self, doc: StateDoc) -> None:
        raise NotImplementedError

    def _durable_later(self, doc: StateDoc) -> None:
        raise NotImplementedError

    def _foreign_to(self, mine: StateDoc, doc: StateDoc) -> bool:
        raise NotImplementedError

    async def _full_sync(self) -> bool:
        raise NotImplementedError

    def _pushed(self, item: StateDoc | Ack | PushNotRead | PushNewer) -> None:
        """A verified change or ack pushed by the store, taken in the loop iteration that
        read it: a new kill is in force before anything else runs. A push that would relax
        anything, or too large to verify here, is only a hint: the store is re-read. One a
        newer version wrote is judged by the next poll's full sync, as a changed generation
        (a replay repaired, a newer writer's state refused: vouching.py's `_blind`)."""
        if isinstance(item, Ack):
            self.peers.note(item)
            return
        if isinstance(item, PushNewer):
            self._resync = True
            return
        if isinstance(item, PushNotRead):
            self.metrics.inc("killgate_state_pushes_not_read_total")
            self._big_pushes.poke()
            return
        held = self.holder.doc
        if self._foreign_to(held, item):
            self._resync = True  # merged (a re-seed), never adopted: at once, since a kill
            self._reread()  # may come with it
            return
        if item.generation <= held.generation:
            if item.generation == held.generation and held.writes[-1:] == item.writes[-1:] != ():
                self._judged = item.audit_head or None  # our document, an event appended: judged
                # remembered across a restart: a store put back to before the event is
                # then a break in the chain, not continued (StateStore.anchored); written
                # once the fleet's burst of swaps has passed, as an apply's is (the
                # committer's own push comes back as the others apply it: its fsync then
                # took a CPU from the last of them, +0.4 ms a kill's p50 on 2 vCPUs)
                self._durable_later(item)
            return
        if relaxes(held, item):
            self._reread()
        elif self._apply(item):
            self._spawn(self._after_apply(item))

    def _reread(self) -> None:
        """Load the store's document, verify it, and apply it if newer (single flight)."""
        if self._stopping:
            return  # (the store is closing; a re-read started now would outlive it)
        if self._recheck is not None and not self._recheck.done():
            self._recheck_again = True
            return
        self._recheck = asyncio.create_task(self._reread_loop(), name="state-reread")
        self._side_tasks.add(self._recheck)
        self._recheck.add_done_callback(self._side_tasks.discard)

    async def _reread_loop(self) -> None:
        while True:
            self._recheck_again = False
            try:  # applied as the store's answer is read (no loop turn in between)
                got = await self.store.load(on_loaded=self._adopt)
            except StateError:
                return  # the poll will find it
            self._adopt(got)  # (done already, unless the store could not say it early)
            if got.trusted and got.doc is not None \
                    and self._foreign_to(self.holder.doc, got.doc):  # to merge: now
                try:
                    await self._full_sync()
                except (StateError, AuditError, OSError):
                    return  # the poll will
            if not self._recheck_again:
                return

    def _adopt(self, got: Loaded) -> None:
        """The store's document, verified, if it is newer than ours, whatever the unsigned
        generation key beside it says (as reseed's _took: a key rewritten in a loop held an
        unkill, which a push only hints at, off this instance until the next poll)."""
        if got.doc is None or got.problem is not None:
            return
        if self._foreign_to(self.holder.doc, got.doc):
            self._resync = True
        elif self._apply(got.doc):
            self._spawn(self._after_apply(got.doc))
