"""A config reload's audit event, once per fleet-wide change, recorded in turn and kept
through a store outage (ConfigHistory.reloaded makes it: control/confighistory.py).

One event per fleet-wide change: the instances making a change (old digest -> new digest)
share a claim keyed on it and on the *occurrence* of the old file they leave, so an earlier
change of the same two files (a revert, then a re-deploy) is another key, and is audited
again. An occurrence is a token every instance that made the same change derives alike: the
hash of the claim key of the change that brought the file (occurrence.py), recorded in the
change's event (`after.occurrence`); a start joins the occurrence the trail's newest
`config.reload` event recorded when it runs that file, or else derives a new one from it
(the fleet changed files by restarts). No clock decides it: the claims' times used to, and a
clock stepped back (or one ahead when the earlier claim was made) took a re-deploy for the
earlier change, and its `config.reload` event was lost. No record outside the trail decides
it either (occurrence.py: a signed `config:head` key, put back, did the same). A claim
names the event written for it, and a sibling takes the change as recorded only once that
event is on the trail's chain: a store put back to an earlier state (document and trail)
keeps the claims made since, and a change made again was taken for one whose event was gone.
A claim made afresh looks for the change's event on the trail first (its occurrence, among
the newest NEAR entries): a claim gone (past CLAIM_TTL, deleted by a redis writer) had the
change recorded twice. (The claim: reloadclaim.py.)

The audit runs behind the reload (one task after another, in the order of the changes):
waiting for a sibling's event (up to CLAIM_WAIT command timeouts: a claim of the previous
release, which names none; a sibling that died after claiming) held the reload's lock, so
the next reload, a revert of a bad file included, waited that long (`stop` bounds what a
shutdown waits for it).

A store that does not answer (or answers it cannot say) does not drop the event: the change
is kept (`Pending`: its draft, made at the reload, with its digests and the time of the
change, `after.changed_at`; its claim record, the same on every try; on disk, reloadkept.py,
from its queueing when the store is not known to answer, else once KEEP_AFTER passed
unrecorded) and tried again with
back-off until the store answers, in turn (a reload made meanwhile is recorded after it),
while `/v1/status` lists it (`config.audit_pending`). A commit whose answer was lost
(StoreOutcomeUnknown: it may have landed) names the event it sent: the next try looks for it
on the trail's chain first, and writes it only if it is not there (an event written once,
not twice; so is one written whose claim could not be updated). At most PENDING_MAX changes
wait so; one more is logged (`config_reload_audit_dropped`) and not recorded.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.control.occurrence import in_trail
from gateway.control.reloadclaim import CLAIM_TTL, claimed
from gateway.control.reloadkept import KeptChanges
from gateway.domain.audit import AuditDraft
from gateway.errors import AuditError, StateError, StoreOutcomeUnknown
from gateway.log import event
from gateway.state.sync import Sync
from gateway.tasks import cancel

__all__ = ["Pending", "ReloadAudits"]

log = logging.getLogger("killgate")

#: the pause before a change's audit is tried again after the store failed it, doubled on
#: each failure up to RETRY_MAX (seconds)
RETRY_FIRST = 0.2
RETRY_MAX = 10.0
#: changes whose audit waits for the store, at most (in memory: each holds its draft)
PENDING_MAX = 64
#: a change not yet recorded this long after it was queued is kept on disk (seconds): a
#: store that answers records it sooner (no file written); one frozen since its last
#: answer held the first try a command timeout, a crash then lost the change
KEEP_AFTER = 0.1


@dataclass
class Pending:
    """A change whose audit is not yet recorded (module doc): what is written, once."""

    key: str  # the claim key (the change and the occurrence it left)
    draft: AuditDraft  # made at the reload: its digests, the time of the change
    mine: dict[str, Any]  # this instance's claim record (the same on every try)
    wait: float  # how long a sibling's claim is waited for (reloadclaim.claimed)
    tries: int = 0  # failed so far
    error: str = ""  # the last failure
    #: the hash of an event sent whose commit may have landed (its answer lost), or that
    #: landed but whose claim could not be updated: looked for before writing again
    sent: str | None = None

    def status(self) -> dict[str, Any]:
        after = self.draft.after if isinstance(self.draft.after, dict) else {}
        return {"from": (self.draft.before or {}).get("digest"), "to": after.get("digest"),
                "changed_at": after.get("changed_at"), "tries": self.tries,
                "error": self.error, "event_sent": self.sent}


class ReloadAudits:
    """The changes whose audit is not yet recorded, each recorded after the one before."""

    def __init__(self, sync: Sync, kept: KeptChanges | None = None) -> None:
        self.sync = sync
        #: the changes waiting, on disk while they wait (reloadkept.py): a stop or a crash
        #: before the store answers no longer loses them
        self.kept = kept
        self._stopping = False  # (what a stop cancels stays in the file, for the next start)
        #: the file holds changes: written once a try failed (a change that waits), not on
        #: every reload (two fsyncs on the loop each)
        self._on_disk = False
        #: the audits of changes not yet recorded (the newest waits for the one before it)
        self._audits: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None
        self._pending: list[Pending] = []  # (in the order of the changes)
        #: the changes in no audit event, dropped (PENDING_MAX, or a failure no try can
        #: mend): how many, and the last (`/v1/status` config.audit_dropped)
        self._dropped: tuple[int, dict[str, Any]] | None = None

    def pending(self) -> list[dict[str, Any]]:
        """The changes whose audit event is not yet recorded, oldest first (`/v1/status`
        `config.audit_pending`)."""
        return [p.status() for p in self._pending]

    def dropped(self) -> dict[str, Any] | None:
        """The changes dropped unrecorded since the start: {"count", "last"} (None: none)."""
        return None if self._dropped is None else {"count": self._dropped[0],
                                                   "last": self._dropped[1]}

    def _drop(self, p: Pending) -> None:
        last = {k: v for k, v in p.status().items() if k in ("from", "to", "changed_at",
                                                               "error")}
        self._dropped = ((self._dropped[0] if self._dropped else 0) + 1, last)

    def queue(self, p: Pending) -> None:
        """Record `p` once the changes before it are (the trail keeps their order)."""
        if len(self._pending) >= PENDING_MAX:
            event(log, "config_reload_audit_dropped", logging.ERROR, config=p.draft.target[
                "config"], pending=len(self._pending), action="the state store has not "
                "answered for the changes before it: this change is in no audit event; "
                "`killgate status` lists the ones still waiting, and says this one dropped")
            self._drop(p)
            return
        self._pending.append(p)
        loop = asyncio.get_running_loop()
        if self._on_disk or not self.sync.connected:
            self._keep()  # (the store not known to answer: kept before the first try)
        else:
            loop.call_later(KEEP_AFTER, self._keep_waiting, p)
        task = loop.create_task(self._in_turn(self._last, p), name="config-reload-audit")
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)
        self._last = task

    def resume(self, instance: str, wait: float) -> None:
        """Queue the changes the processes before this one left waiting (reloadkept.py: its
        own file's and every other one's on the snapshot, taken over), before
        any change of this one's: claimed as this instance (that process's claim, if it
        made one, is a sibling's that names no event: its event, if it landed, is found on
        the trail by its occurrence; else the change is recorded here)."""
        if self.kept is None:
            return
        for key, draft, since in self.kept.load():
            self._on_disk = True  # (left there until recorded: a stop again keeps it)
            event(log, "config_reload_audit_resumed", config=draft.target.get("config"),
                  action="a change a stopped process left waiting for the store: recorded "
                  "once the store answers")
            self.queue(Pending(key, draft, {"instance": instance, "time": since}, wait))
        self.kept.settle()  # (the files taken over: their changes are in this one's now)

    def _keep_waiting(self, p: Pending) -> None:
        """`p` kept on disk if it still waits (KEEP_AFTER after it was queued)."""
        if p in self._pending and not self._on_disk:
            self._keep()

    def _keep(self) -> None:
        """The changes waiting written to the file (none: it is removed)."""
        if self.kept is not None and not self._stopping:
            self.kept.save([(p.key, p.draft, float(p.mine.get("time") or 0.0))
                            for p in self._pending])
            self._on_disk = bool(self._pending)

    async def stop(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the audits not yet recorded, then cancel what is
        left, said in the log; kept on disk for the next start (reloadkept.py)."""
        if not self._audits:
            return
        _, pending = await asyncio.wait(set(self._audits), timeout=timeout)
        if pending:
            where = self.kept.path if self.kept is not None else None
            event(log, "config_reload_audit_abandoned", logging.WARNING, changes=len(pending),
                  action="the instance stopped before recording its config change; " + (
                      f"kept in {where}: the next start on it records it" if where is not None
                      else "audit verify and the trail show whether a sibling recorded it"))
        self._stopping = True
        await cancel(self._audits)

    async def _in_turn(self, before: asyncio.Task[None] | None, p: Pending) -> None:
        """`_audit`, once the change before it is recorded (the trail keeps their order)."""
        try:
            if before is not None:
                await asyncio.wait({before})
            await self._audit(p)
        except Exception as exc:  # noqa: BLE001 - no caller to raise to: said in the log
            event(log, "config_reload_audit_failed", logging.ERROR, error=repr(exc))
            p.error = repr(exc)
            self._drop(p)
        finally:
            self._pending.remove(p)
            if self._on_disk:
                self._keep()

    async def _audit(self, p: Pending) -> None:
        """Record `p`, tried again with back-off while the store fails it (module doc)."""
        pause = RETRY_FIRST
        while True:
            try:
                await self._record(p)
                if p.tries:
                    event(log, "config_reload_audit_recorded", config=p.draft.target["config"],
                          tries=p.tries + 1)
                return
            except StoreOutcomeUnknown as exc:
                sent = exc.event.get("hash") if isinstance(exc.event, dict) else None
                p.sent = sent if isinstance(sent, str) else p.sent
                p.error = str(exc)
            except (StateError, AuditError) as exc:
                p.error = str(exc)
            p.tries += 1
            if not self._on_disk:
                self._keep()  # (it waits for the store: kept through a stop from now on)
            event(log, "config_reload_audit_pending", logging.WARNING,
                  config=p.draft.target["config"], tries=p.tries, error=p.error,
                  retry_in=round(pause, 3), action="the change's audit event is written once "
                  "the state store answers (`killgate status`: config.audit_pending)")
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _record(self, p: Pending) -> None:
        """One try: claim the change, write its event (unless a try before landed it), and
        name the event in the claim."""
        if not await claimed(self.sync.store, p.key, p.mine, p.wait):
            return  # another instance making the same change recorded it
        store = self.sync.store
        if p.sent is None or not await in_trail(store, p.sent):
            # (lost races: append_audit's own rule, state/contention.py, up to 2 s of them;
            # five tries without a pause left a fleet's reload unrecorded: tests/
            # test_reload_audit_conflict.py)
            ev = await self.sync.append_audit(p.draft)
            if ev is None:
                raise StateError("the state store holds no state this instance can verify")
            if not isinstance(ev.get("hash"), str):
                return
            p.sent = ev["hash"]
        await store.idem_take(p.key, p.mine, {**p.mine, "event": p.sent}, CLAIM_TTL)
