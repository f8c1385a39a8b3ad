"""Emergency local kills kept, enforced, and merged into the store when it returns.

Owns the journal's life in a serving process (the file: localkills.py): read at start
before the routes open (a restart enforces them from its first request), read again
whenever a sibling worker wrote it (every `poll_interval`, a stat), handed to the
routing snapshot's holder (enforced beside the store's kills, never instead of them),
taken (`take`: journaled durably, then enforced, at once), and merged: once the store
answers again, each entry is committed as a kill like any other (the same rule,
domain/kills.py; the audit event is the journal's entry appended to the trail, `local`
naming the instance, when and on which generation it was taken), so the fleet enforces
it; only then is it dropped from the journal. Never an unkill, never lifted silently.

A kill the store's document shows lifted by an unkill made after this instance took its
local kill (the lifted flag is newer than the generation it held, `based_on`: someone who
could reach the store killed and unkilled it meanwhile) is not dropped: kills are the safe
direction, so it is committed all the same, but loudly (`local_kill_after_unkill` warning,
`after_unkill` in its audit event): unkill again if the unkill made elsewhere should stand.
An entry taken with `based_on` 0 (the instance held no state yet) cannot tell an unkill
made before it from one made after: any is named, its order said unknown
(`after_unkill.order`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gateway.domain import kills
from gateway.domain.audit import AuditDraft, genuine, utc_now
from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.errors import AuditError
from gateway.errors_store import StateError
from gateway.log import event
from gateway.state.localkills import LocalEntry, LocalKills

if TYPE_CHECKING:
    from gateway.state.sync import Sync

__all__ = ["LocalKillKeeper", "after_unkill"]

log = logging.getLogger("killgate.state")

#: how far back (audit events, newest first) a merge looks for an entry merged before
REPLAY_PAGES, REPLAY_PAGE = 20, 500


def after_unkill(doc: StateDoc, e: LocalEntry) -> int | None:
    """The generation of the flag an unkill lifted since `e` was taken (None: none was). With
    `based_on` 0 (taken holding no state) any lifted flag is returned: its order unknown."""
    lifted = doc.lifted.get(e.key)
    return lifted if lifted is not None and lifted > e.based_on else None


class LocalKillKeeper:
    def __init__(self, sync: Sync, journal: LocalKills, set_local: Any) -> None:
        self.sync = sync
        self.journal = journal
        self.set_local = set_local  # the holder's set_local_kills
        self._lock = asyncio.Lock()
        self.merged = 0  # entries committed into the store by this process
        #: kill key -> (its flag, the generation that holds it): merged by a sibling, and
        #: enforced here until this process holds that generation (no gap between the
        #: journal's entry gone and the store's kill applied)
        self._held_back: dict[str, tuple[KillFlag, int]] = {}
        #: entries this process committed whose drop from the journal failed (a volume
        #: gone read-only, full): id -> the generation that holds it; the drop is tried
        #: again, the commit not (each round appended a `kill.local_merged` event)
        self._committed: dict[str, int] = {}

    @property
    def entries(self) -> tuple[LocalEntry, ...]:
        return self.journal.entries

    def journal_file(self) -> str | None:
        return None if self.journal.path is None else str(self.journal.path)

    async def load(self) -> None:
        """Read the journal (at start, and when it changed) and enforce it. An entry gone
        from the file that the store does not hold was removed by hand (never merged): its
        kill is lifted here, said loudly (`local_kill_dropped`)."""
        before = self.journal.entries
        entries = await asyncio.to_thread(self.journal.read)
        if self.journal.previous_key:  # (a rotation's step 2: before step 3 refuses it)
            try:
                await asyncio.to_thread(self.journal.reseal)
            except OSError as exc:
                event(log, "local_kills_not_resealed", logging.ERROR,
                      path=str(self.journal.path), error=str(exc),
                      consequence="still signed with the previous state key: removing "
                      "previous_signing_key (rotation step 3) would refuse these local "
                      "kills; fix the volume first")
            entries = self.journal.entries
        kept = {e.id for e in entries}
        for e in before:
            if e.id in kept:
                continue
            if e.id in self.journal.merged:
                self._held_back[e.key] = (e.flag(), self.journal.merged[e.id])
            else:
                event(log, "local_kill_dropped", logging.WARNING, kill=e.key, actor=e.actor,
                      path=str(self.journal.path), consequence="removed from the journal "
                      "without being merged into the store (by hand, or the file was "
                      "refused): no longer enforced here")
        self.enforce()
        if entries and {e.id for e in before} != kept:
            event(log, "local_kills_loaded", logging.WARNING,
                  kills=sorted(e.key for e in entries),
                  consequence="enforced on this instance only, not yet in the store: "
                              "merged into it when it answers")

    async def take(self, scope: str, route: str | None, version: str | None, actor: str,
                   reason: str, abort_inflight: bool,
                   evidence: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Journal a local kill durably, then enforce it: the entry in force (public) and
        whether it is new (one of its key journaled before is kept). `evidence` (an
        alert's) is journaled with it, bounded, and its merged audit event carries it.
        Raises OSError or ValueError when it cannot be journaled (nothing enforced)."""
        if self.journal.path is None:
            raise ValueError("no state.snapshot_path: a local kill has nowhere to be kept")
        entry = LocalEntry.new(scope, route, version, actor, reason, utc_now(),
                               self.sync.instance, self.sync.holder.doc.generation,
                               abort_inflight, evidence)
        async with self._lock:
            kept = await asyncio.to_thread(self.journal.add, entry)
            self.enforce()
        if kept is entry:
            event(log, "local_kill_taken", logging.WARNING, kill=kept.key, actor=kept.actor,
                  instance=kept.instance, consequence="enforced on this instance (and its "
                  "--workers group) only; merged into the store when it answers")
        return kept.public(), kept is entry

    @property
    def not_in_store(self) -> int:
        """The journal's entries not committed into the store (killgate_local_kills)."""
        return sum(e.id not in self._committed for e in self.journal.entries)

    def public(self) -> dict[str, Any]:
        """What /v1/status says of them."""
        return {"kills": [{**e.public(), **({"in_store": self._committed[e.id]}
                                            if e.id in self._committed else {})}
                          for e in self.journal.entries],
                "refused": self.journal.refused, "merged": self.merged}

    async def run(self, interval: float) -> None:
        while True:
            try:
                if self.journal.changed():
                    await self.load()
                elif self._held_back:
                    self.enforce()
                # (also while only its pushes are cut: the store was read and verified, its
                # commits go through; a subscription an ACL refuses never comes back)
                if self.journal.entries and self.sync.synced_once and (
                        self.sync.connected or self.sync.pushes_cut):
                    await self.merge()
            except asyncio.CancelledError:
                raise
            except (StateError, AuditError, OSError, ValueError) as exc:
                event(log, "local_kills_not_merged", logging.WARNING, error=str(exc),
                      consequence="kept, enforced here; tried again")
            except Exception as exc:  # noqa: BLE001 - a bug must not end the loop
                event(log, "local_kills_error", logging.ERROR, error=repr(exc))
            await asyncio.sleep(interval)

    async def merge(self) -> None:
        """Commit every journaled entry into the store, then drop it from the journal. One
        process of a --workers group at a time (`<journal>.merge`, flock; a sibling merging
        already: skipped this round), the journal read again under it: a sibling's merge
        is not recorded twice."""
        async with self._lock:
            held = await asyncio.to_thread(self.journal.merge_lock)
            if held is None:
                return
            try:
                await self.load()
                for e in self.journal.entries:
                    generation = self._committed.get(e.id)
                    first = generation is None
                    if generation is None:
                        generation = self._committed[e.id] = await self._merge_one(e)
                        self.merged += 1
                    try:
                        await asyncio.to_thread(self.journal.remove, {e.id}, generation)
                    except OSError as exc:  # (in the store: the others are committed too)
                        if first:
                            event(log, "local_kill_not_dropped", logging.ERROR, kill=e.key,
                                  generation=generation, error=str(exc),
                                  consequence="committed into the store (the fleet enforces "
                                  "it) but the journal cannot be rewritten: still listed and "
                                  "enforced here, dropped once its volume is writable")
                        continue
                    del self._committed[e.id]
                    self.enforce()
            finally:
                held.close()

    def enforce(self) -> None:
        """Hand the holder the journal's kills and those merged but not yet applied here."""
        held = self.sync.holder.doc.generation
        for key in [k for k, (_, g) in self._held_back.items() if held >= g]:
            del self._held_back[key]
        flags = {k: f for k, (f, _) in self._held_back.items()}
        self.set_local({**flags, **self.journal.flags()})

    async def _merge_one(self, e: LocalEntry) -> int:
        """Commit `e` into the store; the generation that holds it."""
        lifted = after_unkill(self.sync.holder.doc, e)
        local: dict[str, Any] = {"id": f"local:{e.id}", "instance": e.instance,
                                 "taken": e.time, "based_on": e.based_on}
        target = {"scope": e.scope, "route": e.route, "version": e.version}
        # (an alert's: what its kill through the store would have carried)
        evidence = {} if e.evidence is None else {"evidence": e.evidence}
        replayed = None if lifted is None else await self._merged_before(e)
        if replayed is not None:
            # (merged before, then lifted by an unkill: a copy of an old journal, never a
            # kill taken since; committed again, it would undo that unkill unreviewed)
            event(log, "local_kill_replayed", logging.ERROR, kill=e.key,
                  id=f"local:{e.id}", merged_by=replayed, lifted_generation=lifted,
                  consequence="not committed again and dropped from the journal: this entry "
                  "was merged into the store before (that audit event) and an unkill lifted "
                  "it since; the journal was put back from an old copy (a restored backup, "
                  "or someone who can write to the snapshot folder)")
            await self.sync.append_audit(AuditDraft(
                e.actor, "kill.local_replayed", target, e.reason, None, None,
                source=f"local:{e.instance}",
                extra={"local": {**local, "replayed": {"merged_by": replayed,
                                                       "lifted_generation": lifted}},
                       **evidence}))
            return self.sync.holder.doc.generation
        if lifted is not None:
            known = e.based_on > 0  # (0: the instance held no state yet when it took it)
            local["after_unkill"] = {"lifted_generation": lifted, "order": "after" if known
                                     else "unknown"}
            when = ("after the local kill was taken" if known else "before or after the "
                    "local kill was taken (unknown: this instance held no state yet when "
                    "it took it, based_on 0)")
            event(log, "local_kill_after_unkill", logging.WARNING, kill=e.key,
                  lifted_generation=lifted, order=local["after_unkill"]["order"],
                  action=f"the store shows this key killed and unkilled elsewhere {when}; "
                         "the local kill is committed all the same (kills are never "
                         "dropped silently): unkill it again if the unkill made elsewhere "
                         "should stand")

        def change(cur: StateDoc) -> Any:
            return kills.kill(cur, e.scope, e.route, e.version, e.actor,  # type: ignore[arg-type]
                              e.reason, e.time, e.abort_inflight)

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            before = cur.kills.get(e.key)
            return AuditDraft(e.actor, "kill", target, e.reason,
                              before.public() if before else None,
                              new.kills[e.key].public(), source=f"local:{e.instance}",
                              extra={"local": local, **evidence})

        new, ev = await self.sync.write(change, describe)
        if ev is None:  # (the store held the kill already: the journal's entry, recorded)
            flag = new.kills.get(e.key)
            await self.sync.append_audit(AuditDraft(
                e.actor, "kill.local_merged", target, e.reason, None,
                flag.public() if flag else None, source=f"local:{e.instance}",
                extra={"local": {**local, "changed": False}, **evidence}))
        event(log, "local_kill_merged", logging.WARNING, kill=e.key,
              generation=new.generation, changed=ev is not None,
              audit_id=None if ev is None else ev.get("id"))
        return new.generation

    async def _merged_before(self, e: LocalEntry) -> str | None:
        """The id of a genuine audit event (its hash and MAC ours) that merged `e` into the
        store already, or None. Read only when the store shows its key unkilled since `e`
        was taken; newest first, back to the events older than `e` (a forged event cannot
        make a genuine entry look replayed: its MAC is checked)."""
        store = self.sync.store
        keys, ident, before = store.audit_keys.keys(), f"local:{e.id}", None
        for _ in range(REPLAY_PAGES):
            page, before = await store.audit_page(REPLAY_PAGE, before)
            for ev in page:
                if not genuine(ev, keys):
                    continue
                local = ev.get("local")
                if ev.get("action") in ("kill", "kill.local_merged") \
                        and isinstance(local, dict) and local.get("id") == ident:
                    return str(ev.get("id"))
                if str(ev.get("time", "")) < e.time:
                    return None
            if before is None:
                return None
        return None
