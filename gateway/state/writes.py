"""Writes to the replicated state: one change at a time, atomic with its audit event.

Owns `write` (read the newest verified state, let the caller's function decide the
`Change`, apply it with `statedoc.apply_change`, commit it with its audit event
compare-and-set, retry on a lost race), `append_audit` (an event without a state change)
and the durability wait (`min_replicas`). Mixed into `Sync`, whose store, holder and
apply step it uses; it never touches the sync loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway.config import StateConfig
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, StateDoc, apply_change
from gateway.domain.writeids import RETRY_OF, descends_from
from gateway.errors import (
    DomainError,
    EarlierLanded,
    NotDurable,
    StateError,
    StoreConflict,
    StoreOutcomeUnknown,
)
from gateway.errors_cut import CutAfterCommit
from gateway.log import event
from gateway.state.contention import PATIENCE, Contention
from gateway.state.holder import Holder
from gateway.state.store import Loaded, Store
from gateway.state.tamper import TamperLog, contended
from gateway.telemetry.metrics import Metrics

__all__ = ["ChangeFn", "Describe", "Writes"]

log = logging.getLogger("killgate.state")

#: decides the change from the current state: None = nothing to do; may raise DomainError
ChangeFn = Callable[[StateDoc], Change | None]
Describe = Callable[[StateDoc, StateDoc], AuditDraft]


class Writes:
    store: Store
    holder: Holder
    metrics: Metrics
    cfg: StateConfig
    synced_once: bool
    committed: list[Callable[[dict[str, Any], StateDoc], None]]
    _write_lock: asyncio.Lock
    _resync: bool  # a document to merge was seen (reseed.py's `_foreign_to`)
    tamper: TamperLog

    # provided by Sync and its other mixins (reseed.py)
    def _apply(self, doc: StateDoc) -> bool:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def _unvouched(self) -> str | None:
        raise NotImplementedError

    def _sibling_tag(self) -> str:  # (vouching.py: what each write id names its writer by)
        raise NotImplementedError

    async def _after_apply(self, doc: StateDoc) -> None:
        raise NotImplementedError

    async def _reseed(self, got: Loaded, mine: StateDoc) -> None:
        raise NotImplementedError

    def _judge(self, got: Loaded) -> None:
        raise NotImplementedError

    def _foreign_to(self, mine: StateDoc, doc: StateDoc) -> bool:
        raise NotImplementedError

    def _behind(self, mine: StateDoc, doc: StateDoc) -> bool:
        raise NotImplementedError

    async def write(self, change: ChangeFn,
                    describe: Describe) -> tuple[StateDoc, dict[str, Any] | None]:
        """Apply `change` to the store's current state atomically with its audit event.

        `change` may raise a DomainError to refuse. Raises StoreUnavailable when the store
        cannot be reached and AuditError when the audit event cannot be stored; in both
        cases nothing changed.
        """
        async with self._write_lock:
            # Optimistic first attempt: what we enforce is nearly always the store's newest
            # state (the commit compares generations, so a stale guess only costs a retry);
            # not while a document to merge is pending (`_resync`): one at our generation
            # would compare equal, and be replaced unmerged; nor while this instance's state
            # is not known to be the fleet's (reseed.py's `_unvouched`: a key that may not be
            # the fleet's): the commit compares only the unsigned generation key, and a
            # document it cannot verify at our generation (the fleet's re-seed) was replaced
            # by its write, answered 200 (tests/test_unverifiable_readiness.py)
            cur: StateDoc | None = (self.holder.doc if self.synced_once and not self._resync
                                    and self._unvouched() is None else None)
            guessed = cur is not None
            based_on: StateDoc | None = None
            pinned: StateDoc | None = None
            retry_of = RETRY_OF.get()  # (a retry after outcome_unknown: earlier attempts')
            races = Contention(self._refused)  # (contention.py: the pauses, when to stop)
            async for _ in races:
                if cur is None:
                    guessed, based_on, pinned = False, None, None
                    # what we hold, read before the load (as _full_sync): a push applied
                    # while it was in flight is a commit the store ran after its read, not
                    # the store going back (a re-seed nobody caused, "older")
                    mine = self.holder.doc
                    got = await self.store.load()
                    self._judge(got)
                    if got.doc is None or got.doc.generation < mine.generation \
                            or self._foreign_to(mine, got.doc) or self._behind(mine, got.doc):
                        await self._reseed(got, self.holder.doc)
                        continue
                    if not got.trusted:
                        # only the (unsigned) generation key disagrees with the verified
                        # document: the commit compares the document instead (a re-seed to
                        # put the key right lost the race to a key rewritten in a loop,
                        # and so did every kill)
                        based_on = got.doc
                    if self._unvouched() is not None:
                        # nor on the generation key alone: the fleet's re-seed at the same
                        # generation, landed between this load and the commit, is a document
                        # it cannot verify, and was replaced by its write (tests/
                        # test_unvouched_commit_race.py): the commit compares the document
                        pinned = got.doc
                    cur = got.doc
                if retry_of and not retry_of.isdisjoint(cur.writes):
                    # an earlier attempt's commit landed after the retry asked: not again
                    raise EarlierLanded(next(w for w in cur.writes if w in retry_of))
                # A refusal ("not killed") or a no-op ("already killed") decided on our own
                # copy must hold in the store too: a change made elsewhere that has not
                # reached us yet would otherwise make a kill look done, or an unkill moot.
                try:
                    ch = change(cur)
                except DomainError:
                    if guessed and await self._moved(cur):
                        cur = None
                        continue
                    raise
                if not ch:
                    if guessed and await self._moved(cur):
                        cur = None
                        continue
                    # nothing to change: no generation, no audit event; a retry after
                    # NotDurable lands here and confirms what is already there
                    await self._durable(cur.generation, fence=True)
                    return cur, None
                new = apply_change(cur, ch, writer=self._sibling_tag())
                stored: list[StateDoc] = []
                try:
                    ev = await self.store.commit(str(cur.generation), new, describe(cur, new),
                                                 on_stored=self._enforcer(stored),
                                                 based_on=based_on, pinned=pinned)
                except StoreConflict:
                    cur = None
                    continue
                except StoreOutcomeUnknown as exc:
                    exc.doc = new  # (its write id: `landed` tells a retry whether it did)
                    raise
                if stored:
                    new = stored[0]
                elif ev is not None:
                    new = new.with_changes(audit_head=ev["hash"])
                if self._apply(new):  # (when the store's answer did not already)
                    self._spawn(self._after_apply(new))
                self.metrics.inc("killgate_audit_records_total")
                self._tell(ev, new)
                try:
                    await self._durable(new.generation)
                except NotDurable as exc:
                    # (committed by this call: in force, not yet replicated)
                    exc.event, exc.doc = ev, new
                    raise
                except asyncio.CancelledError as exc:  # (the stop: said as committed)
                    raise CutAfterCommit(ev, new) from exc
                return new, ev
            if races.forged:
                raise StoreConflict(
                    "the state store kept changing under this change, and what changed it does "
                    "not hold the signing key (a forged state, generation or audit head key: "
                    "store.verification in /v1/status): someone is writing to Redis without "
                    "it; retrying will not help until that stops (nothing was changed)")
            raise StoreConflict("the state kept changing; try again")

    async def landed(self, write: str, generation: int) -> bool | None:
        """Whether the write `write` (a `writes` id, of `generation`: one whose commit's
        answer was lost) is in the store's state: True when the stored document descends
        from it, False when it does not and its `writes` reach back to that generation
        (or it is older), None when the store cannot say (its writes do not reach back
        that far, or it holds no verified document). Raises StateError when unreachable."""
        doc = (await self.store.load()).doc
        if doc is None:
            return None
        if write in doc.writes:
            return True
        if doc.generation < generation:
            return False
        return descends_from(doc.writes, write, generation)

    def _refused(self) -> int:
        """How many values a write compares and sets this instance has refused so far."""
        return contended(self.tamper.counts)


    def _enforcer(self, stored: list[StateDoc]) -> Callable[[StateDoc], None]:
        """Enforces a commit's own result (not our pub/sub echo) as the store's answer is
        read, before anything that can wait: ack and snapshot go to the background (the
        receipt counts us already); side channels hear of it once `write` resumes."""

        def enforce(doc: StateDoc) -> None:
            stored.append(doc)
            if self._apply(doc):
                self._spawn(self._after_apply(doc))

        return enforce

    def _tell(self, ev: dict[str, Any] | None, new: StateDoc) -> None:
        """Side channels (events) hear of a committed change; they never fail the write."""
        for fn in self.committed:
            if ev is not None:
                try:
                    fn(ev, new)
                except Exception as exc:  # noqa: BLE001 - the change is committed already
                    event(log, "commit_listener_failed", logging.ERROR, error=repr(exc))

    async def append_audit(self, draft: AuditDraft,
                           patience: float = PATIENCE) -> dict[str, Any] | None:
        """Append an audit event without changing the state (same generation, same doc).
        None: the store holds no verified state to append to. One at a time with this
        instance's writes (the write lock): two interleaved, the one that loaded first saw
        the other's newer head in this instance's memory, took the store for behind it (a
        restored backup) and re-seeded it: a `state.reseed` nobody caused, and after five
        tries "the state kept changing" (tests/test_append_concurrent.py). The sync loop
        appends the automatic actions noted while the store was away only while no write
        holds the lock: the loop that brings kills must not wait on a write's durability,
        nor on `patience` (seconds of lost races past the first MIN_ATTEMPTS: it passes 0)."""
        async with self._write_lock:
            races = Contention(self._refused, patience)  # (the rule `write` follows)
            async for _ in races:
                got = await self.store.load()
                if got.doc is None:
                    return None
                if self._behind(self.holder.doc, got.doc):  # (events it lost: named first)
                    await self._reseed(got, self.holder.doc)
                    continue
                try:
                    # (not known to be the fleet's: only over that very document, as `write`;
                    # a verified document whose (unsigned) generation key disagrees: over
                    # that document, as `write` (`based_on`). Refused as "no verified state"
                    # before, a key rewritten in a loop left every config reload unrecorded)
                    ev = await self.store.commit(
                        got.token, got.doc, draft,
                        based_on=None if got.trusted else got.doc,
                        pinned=got.doc if self._unvouched() is not None else None)
                    self.metrics.inc("killgate_audit_records_total")
                    return ev
                except StoreConflict:
                    continue
        if races.forged:
            raise StoreConflict(
                "the state store kept changing under this audit event, and what changed it "
                "does not hold the signing key (store.verification in /v1/status): the "
                "event was not written")
        raise StoreConflict("the state kept changing; the audit event was not written")

    async def _moved(self, cur: StateDoc) -> bool:
        """Whether the store is past the copy `cur`, or holds another document at its
        generation (another audit head: a write on another branch; one round trip)."""
        gen, head = await self.store.poll()
        return gen != str(cur.generation) or head not in (None, cur.audit_head)

    async def _durable(self, generation: int, fence: bool = False) -> None:
        """With `min_replicas`, a write is confirmed only once that many replicas hold it
        (row 19: a failover must not lose an acknowledged kill). `fence`: a no-op confirms
        a document another commit (or instance) wrote (store.replicated)."""
        need = self.cfg.min_replicas
        if not need:
            return
        try:
            got = await self.store.replicated(need, self.cfg.replica_timeout, generation,
                                              fence)
        except StateError:
            got = 0
        if got < need:
            self.metrics.inc("killgate_writes_not_durable_total")
            event(log, "write_not_durable", logging.WARNING, generation=generation,
                  replicas=got, required=need)
            raise NotDurable(generation, got, need, self.cfg.replica_timeout)
