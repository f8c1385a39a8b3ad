"""Repairing the store from what this instance knows: judge, full sync, re-seed.

Owns the full sync and the re-seed of a store that lost or spoiled its state (the
restrictive merge: only an explicit unkill lifts a kill; legacy kills kept while migrating;
repairs undone at once back off). Mixed into `Sync`, whose store, holder and apply it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway.config import StateConfig
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.branches import collides, descends, lifts_unrecorded, relaxes
from gateway.domain.statedoc import Change, StateDoc, apply_change
from gateway.errors import StoreConflict
from gateway.log import event
from gateway.state.heardloss import trail_ends_at, trail_lacks
from gateway.state.holder import Holder
from gateway.state.reseedmerge import merge_restrictive, new_epoch
from gateway.state.reseedwhy import is_resign, reseed_why
from gateway.state.resigntrail import TrailAhead, trail_moved_past
from gateway.state.snapshot import SnapshotFile
from gateway.state.store import Loaded, Store, legacy_doc
from gateway.state.tamper import TamperLog
from gateway.state.vouching import SIBLING_TAG, Vouching
from gateway.telemetry.metrics import Metrics

__all__ = ["Repair"]

log = logging.getLogger("killgate.state")


#: the most events a trail a wipe left holds when it still counts as just wiped (`_wiped`)
FRESH_TRAIL = 64


def _wiped(trail: int, seq: int) -> bool:
    """Whether a store whose audit trail holds `trail` events (-1: not known) lost its
    trail since it held the event at position `seq` we anchor: none left, or a few and
    fewer than half (what a wipe leaves: the re-seeds and writes made since; another
    instance's re-seed may come first). Whoever deletes events to pass for it is noticed
    by `audit verify`, and gets at most FRESH_TRAIL events in before the back-off applies
    (so too after a real wipe, which leaves every later position past the trail's length)."""
    return trail == 0 or (0 < trail < FRESH_TRAIL and 2 * trail < seq)


class Repair(Vouching, TrailAhead):
    store: Store
    cfg: StateConfig
    holder: Holder
    metrics: Metrics
    snapshot: SnapshotFile
    tamper: TamperLog
    instance: str
    last_error: str | None
    synced_once: bool
    trail_lost: dict[str, Any] | None
    _seen_signed: bool
    _own_epochs: dict[str, None]
    _seen_fleet: bool
    _repairs: int
    _repair_at: float
    _resync: bool  # a document to merge was seen (`_foreign_to`): sync at the next poll
    _foreign: set[str]  # epochs of documents that collided with ours, not yet merged

    # provided by Sync
    def _apply(self, doc: StateDoc) -> bool:
        raise NotImplementedError

    def _judge(self, got: Loaded) -> None:
        """Report what the store holds that we refuse."""
        # (read at each poll that reads the store: a newer version's document is said
        # before max_staleness makes this instance stale)
        self.metrics.set("killgate_state_newer_document", 1 if got.newer else 0)
        if got.problem is None:
            self.unverifiable = None  # (verified, or empty: ours to seed)
        if got.doc is not None:
            self._seen_signed = True
            self._saw(got.doc)
        if got.problem is not None:
            if not got.newer:  # (a newer version's: said by `_blind`, no forgery)
                self.tamper.note("state", got.problem, got.cause)
            self.last_error = f"refused the stored state: {self._refusal(got, self.holder.doc)}"
        elif got.doc is not None and not got.trusted:
            self.tamper.note("generation", f"the stored generation {got.token!r} is not the "
                                           f"signed document's {got.doc.generation}")

    def _foreign_to(self, mine: StateDoc, doc: StateDoc) -> bool:
        """Whether `doc` must be merged with ours (a re-seed), never adopted: it stands at
        our generation but is of another epoch (a re-seed by an instance that knew other
        things, say one that missed a kill) or names another write there; or it is newer,
        on another branch of the history (its writes: say a write on a promoted replica
        that missed ours), and would drop something we hold; or, where write ids cannot
        tell (written by an older version, or we lag beyond their window), it lacks a kill
        we hold and names no unkill of it (`lifted`), or it is of another epoch that does
        not descend from what we hold (its lineage) and would drop something we hold. A
        write on another branch is no unkill of what it never had. Generation 0 holds
        nothing (the empty document an instance starts with, or a fresh store's)."""
        if mine.generation == 0:
            return False
        if collides(mine, doc):
            self._foreign.add(doc.epoch)
            return True
        known = descends(doc, mine) if doc.generation >= mine.generation else None
        if known is False:
            return doc.generation == mine.generation or relaxes(mine, doc)
        if known is None and doc.generation > mine.generation and lifts_unrecorded(mine, doc):
            return True  # (ids cannot tell, but no unkill lifted a kill we hold)
        if known or doc.epoch == mine.epoch or not relaxes(mine, doc):
            return False
        return doc.epoch in self._foreign or doc.lineage.get(mine.epoch, -1) < mine.generation

    async def _full_sync(self) -> bool:
        """Load, judge, repair and apply the store's state. True when this instance then
        holds what the store holds, verified (only then is it a sync: the staleness clock
        starts again); False while the store holds a document refused, older than ours or
        to merge that is not repaired yet (a repair backing off, a write that beat it): a
        kill made elsewhere cannot reach this instance through such a store, so it is not
        reported fresh, nor opened under fail_closed, on it (tests/test_forgery_staleness.py)."""
        self._resync = False
        mine = self.holder.doc  # read first: a write landing meanwhile is not "the store lost it"
        got = await self.store.load()
        self._judge(got)
        if got.empty and mine.generation == 0 and not mine.kills and not self.from_snapshot:
            # A new store, and we know of no state: start generation 0.
            with contextlib.suppress(StoreConflict):
                await self.store.commit(None, StateDoc(epoch=self._mine(new_epoch())), None)
            got = await self.store.load()
        elif (not got.trusted or got.old_key or (got.doc is not None and (
                got.doc.generation < mine.generation or self._foreign_to(mine, got.doc)
                or self._behind(mine, got.doc)))) and not await self._resign_behind(got, mine):
            self._blind(got, mine)  # (before the back-off: never "synced" on nothing)
            # a store that lost its audit trail too (a restart without persistence, a
            # FLUSHALL: each one again, a crash-looping redis) has no trail to flood, and
            # left without our kills it is "nothing killed" to an instance that starts
            # without a snapshot: repaired at once, every time (_wiped)
            wiped = got.problem is None and _wiped(got.trail, mine.audit_seq)
            if not wiped and not self._may_repair():
                self._resync = True  # (a collision does not move the generation key)
                return self._took(got)  # spoiled again at once: keep our state, back off (see _may_repair)
            await self._reseed(got, mine)
            self._foreign.clear()  # (merged)
            got = await self.store.load()
        if got.doc is None or got.problem is not None:
            return False
        if not got.trusted:  # (only the unsigned generation key disagrees: verified)
            return self._took(got)
        if self._foreign_to(self.holder.doc, got.doc):  # (a write that beat our re-seed)
            self._resync = True
            return False
        if self._apply(got.doc):
            self.snapshot.soon(got.doc)
        if (not self.synced_once or self._trail_ahead) and await self._behind_trail(got.doc):
            return False
        return got.doc.generation <= self.holder.doc.generation

    async def _resign_behind(self, got: Loaded, mine: StateDoc) -> bool:
        """Whether `got` is only to re-sign (the previous key's, no older than ours), but the
        trail moved past it: a replay, applied as any verified document, never re-signed."""
        doc = got.doc
        return bool(doc is not None and got.old_key and got.trusted
                    and doc.generation >= mine.generation and not self._foreign_to(mine, doc)
                    and not self._behind(mine, doc) and await trail_moved_past(self.store, doc))

    def _behind(self, mine: StateDoc, doc: StateDoc) -> bool:
        """Whether the store's verified `doc` is the document of our generation that we
        hold, without the newest events that changed no state (a reload's, a retry's
        record) which this instance saw appended to it: a backup restored, events cut. It
        is behind as an older generation is: re-seeded, the re-seed continuing the store's
        trail and naming the head lost (StateStore.behind). Continued, the next event
        broke the chain, which retention then refused for good."""
        return doc.generation == mine.generation and self.store.behind(doc) is not None

    def _took(self, got: Loaded) -> bool:
        """A store not repaired now: whether we hold its document. A verified one read from
        the store, newer than ours and not to merge, is applied whatever the unsigned
        generation key beside it says (what writes take as their base too): with the key
        rewritten in a loop and pushes cut, waiting for the repair's back-off held a kill,
        or an unkill, made elsewhere off this instance for up to 30 s, silently
        (tests/test_forgery_staleness.py)."""
        doc, mine = got.doc, self.holder.doc
        if doc is None or got.problem is not None or self._foreign_to(mine, doc):
            return False
        if doc.generation > mine.generation and self._apply(doc):
            self.snapshot.soon(doc)
        return doc.generation == self.holder.doc.generation

    def _may_repair(self) -> bool:
        """Whether to re-seed the store now. Repairs that are undone again at once (a
        forged, replayed or deleted document, a rewritten generation key, two instances
        with different keys: a rotation step skipped) back off to one per 30 s, so they
        cannot flood the audit trail; writes still repair at once."""
        now = time.monotonic()
        if now - self._repair_at > 60.0:
            self._repairs = 0  # a minute without a refused document: start afresh
        if now < self._repair_at:
            return False
        self._repair_at = now + min(30.0, 0.25 * 2 ** self._repairs)
        self._repairs += 1
        return True

    async def _reseed(self, got: Loaded, mine: StateDoc) -> None:
        """The store lost its state (restart without persistence, FLUSHALL, an old backup)
        or holds one we refuse: write the restrictive merge of what we know."""
        self._blind(got, mine)
        if await self._overtaken(got, mine):
            self._resync |= got.old_key  # (a re-sign: tried again at the next poll)
            return  # (the caller reads the store again and decides again)
        # a verified document is merged whatever the (unsigned) generation key says: its
        # kills are real, and this instance may have missed them
        store_doc = got.doc
        legacy = None
        if got.refused is not None and self.migrating:
            legacy = await asyncio.to_thread(legacy_doc, got.refused)
        if legacy is not None:
            # Migration from unsigned state: its kills are kept (they only stop traffic);
            # its overrides, history, identities and generation are not trusted (whoever
            # wrote it could choose a generation the fleet could never move past).
            kills = {k: f for k, f in legacy.kills.items() if k not in mine.kills}
            mine = apply_change(mine, Change(kills=kills))
        merged = merge_restrictive(store_doc, mine)
        if self._unvouched() is not None:  # (its sibling workers must know it: `_saw`)
            merged = merged.with_changes(
                epoch=self._sibling_tag() + merged.epoch[SIBLING_TAG:])
        fresh = merged.epoch not in self._own_epochs
        self._mine(merged.epoch, merged.generation)
        # the newest head we saw, which the store lacks (not a refused document's call)
        lost = self.store.behind(store_doc) if store_doc is not None or got.empty else None
        # (a rotation's re-sign of a verified document no older than ours continues that
        # document's head, not our own, which a lagging snapshot may hold from before a
        # trim: `audit verify` and retention took that for a loss; other re-seeds, of an
        # older or foreign document, name ours, which the store's trail may lack)
        kept = (store_doc.audit_head if got.old_key and store_doc is not None
                and got.trusted and store_doc.generation >= mine.generation else None)
        anchored = lost or kept or mine.audit_head or None
        resign = is_resign(got, mine, lost)  # (a rotation's re-sign: reseedwhy.py)
        why = reseed_why(got, mine, lost, resign)
        # a store behind us continues its own trail (the store's head key naming it: else
        # the document was put back without its trail, and the newest head we saw is)
        onto = store_doc if lost is not None and store_doc is not None and got.trusted \
            and await trail_ends_at(self.store, store_doc.audit_head) else None
        # (a verified document on another branch, whose trail lacks the head we name)
        branch = lost is None and kept is None and store_doc is not None and got.trusted \
            and store_doc.generation >= mine.generation and (collides(mine, store_doc) or (
                descends(store_doc, mine) is False)) \
            and await trail_lacks(self.store, store_doc.audit_head, mine.audit_head)
        loss = bool(anchored and (got.empty or lost is not None or branch))
        if loss:
            self.trail_lost = {"anchored_head": anchored, "generation": mine.generation,
                               "time": utc_now(), "reseeded_by": None}
            self.metrics.inc("killgate_audit_trail_lost_total")
            event(log, "audit_trail_lost", logging.ERROR, anchored_head=anchored,
                  action="the store lost its audit trail: the re-seed continues the chain from "
                         "this head; the mirror or a backup holds the events before it"
                  if onto is None and not branch else
                  "the store lost the events up to this head (restored from a backup, or a "
                  "replica without them promoted and written on?): the "
                  "re-seed continues the store's trail and names it; the mirror or a backup "
                  "holds them")
        event(log, "state_store_reseed", logging.WARNING, why=why,
              store_generation=None if store_doc is None else store_doc.generation,
              our_generation=mine.generation, kills=sorted(merged.kills))
        draft = AuditDraft(
            actor="killgate/auto", action="state.reseed", target={"store": self.store.backend},
            reason=f"the state store's state was {why}; re-seeded from this instance's "
                   "verified last-known state (kills merged: only an explicit unkill lifts a "
                   "kill)",
            before={"generation": None if store_doc is None else store_doc.generation,
                    "problem": self._refusal(got, mine)},
            after={"generation": merged.generation, "kills": sorted(merged.kills)},
            # (`trail_lost`: every instance that applies the re-seed says it: heardloss.py)
            source=self.instance, extra={"anchored_head": anchored,
                                         **({"trail_lost": True} if loss else {})})
        try:
            # (not known to be the fleet's: only over the very document it merged, as writes)
            ev = await self.store.commit(
                got.token, merged, draft, chain_from=anchored, onto=onto,
                pinned=got.doc if self._unvouched() is not None else None)
        except StoreConflict:
            # another instance re-seeded first; the caller reloads. No document of that
            # epoch exists: it is not one of ours (kept, it filled OWN_EPOCHS and the
            # snapshot's origin with epochs nobody wrote, pushing out real ones)
            if fresh:
                self._own_epochs.pop(merged.epoch, None)
            self._resync |= got.old_key  # (a step-1 write beat the re-sign: again, next poll)
            return  # (the loss named by whoever re-seeded, once applied: heardloss.py)
        if loss and self.trail_lost is not None:  # (its time: the event's, as others read it)
            self.trail_lost.update(reseeded_by=self.instance,
                                   time=(ev or {}).get("time") or self.trail_lost["time"])
        if not resign:
            # (a rotation's step-2 re-sign is no re-seed of a store that lost its state:
            # audited and logged as one, not counted as one, so a routine key rotation
            # moves no "times this instance re-seeded an emptied store")
            self.metrics.inc("killgate_state_reseeds_total")

    async def _overtaken(self, got: Loaded, mine: StateDoc) -> bool:
        """Whether the verified document `got` holds, older than `mine`, behind the audit
        head this instance saw, or to re-sign (a rotation), was only a read overtaken by a
        later commit: the store, read again, holds another document (a store put back stays
        put). Under a burst of writes from 3 instances each logged ~20 `audit_trail_lost`
        (ERROR, counted) and 1-3 "restored from a backup?" re-seeds, nothing lost (review
        revaudit5); so did a step-2 re-sign beaten by a kill (revrot4)."""
        doc = got.doc
        if doc is None or not got.trusted or not (
                got.old_key or doc.generation < mine.generation or self._behind(mine, doc)):
            return False
        again = (await self.store.load()).doc
        return again is not None and (again.generation, again.audit_seq, again.audit_head) \
            != (doc.generation, doc.audit_seq, doc.audit_head)
