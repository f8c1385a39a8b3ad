"""The expiry of two-person approval requests (CONTRACT §5.2): a background sweep.

Owns the task that, every interval, drops the open requests past their ttl (and any
stored request that is not a valid record), each in a state change of its own with its
`approval.expire` audit event, at most MAX_PER_SWEEP a sweep (the rest the next). A
well-formed request of an action this version does not know (a newer version wrote it: a
rolling upgrade) is left alone while it can still be decided, logged once and counted
(`killgate_approval_unknown_action_total`): dropped as invalid, a request made on the new
version vanished whenever an old instance swept first. Once it is past its own `expires`
by UNKNOWN_GRACE (no version approves it any more, and the one that knows it had that long
to sweep it) it is dropped too, audited as any expiry: before, it stayed until a version
that knew the action swept it, and with none left (the upgrade rolled back) for ever,
in every signed state change (MAX_OPEN does not see it). Another instance may sweep the
same one: the second finds nothing to drop. A failed sweep is logged and tried again. The
requests themselves are approvals.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.admin.approvalrecord import Approval, UnknownAction, iso
from gateway.admin.ports import Counters, Current, StateWriter
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, StateError
from gateway.log import event
from gateway.tasks import cancel

__all__ = ["ApprovalExpiry"]

log = logging.getLogger("killgate.admin")


#: state changes (each with its audit event) one sweep makes at most
MAX_PER_SWEEP = 32
#: how long past its own expiry a request of an unknown action is left to the version
#: that knows it (it sweeps every second, with that action's words in its event)
UNKNOWN_GRACE = 60.0


def _stale(raw: Any, now: float) -> tuple[str, Any] | None:
    """(why, what the event shows) when a stored request is to be dropped now; None
    when it stays. Pure."""
    try:
        rec = Approval.from_json(raw)
    except UnknownAction as exc:
        expires = raw.get("expires")  # (from_json read it: a number)
        if float(expires) + UNKNOWN_GRACE > now:
            return None
        return (f"{exc}, past its expiry ({iso(float(expires))}) by more than "
                f"{UNKNOWN_GRACE:g}s: no version approves it any more", raw)
    except ValueError:
        return "not a valid approval record", raw
    if rec.expires > now:
        return None
    shown = rec.public()
    return f"not approved by {shown['needs']} principals within its ttl", shown


class ApprovalExpiry:
    def __init__(self, current: Current, state: StateWriter, clock: Any = time.time,
                 counters: Counters | None = None) -> None:
        self.current = current
        self.state = state
        self.clock = clock
        self.counters = counters
        #: the requests of an unknown action left alone (logged and counted once each)
        self.unknown: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Drop expired (and unreadable) requests, each with an `approval.expire` event,
        at most MAX_PER_SWEEP. Another instance may sweep the same one: the second finds
        nothing to drop."""
        now = self.clock()
        stale = []
        unknown = set()
        for key, raw in self.current.doc.approvals.items():
            if _stale(raw, now) is not None:
                stale.append(key)
                continue
            try:
                Approval.from_json(raw)
            except UnknownAction as exc:
                unknown.add(key)
                self._left_alone(key, str(exc))
        self.unknown &= unknown  # (decided since, by a version that knows them; or dropped)
        dropped = 0
        for key in stale[:MAX_PER_SWEEP]:
            gone: list[tuple[str, Any]] = []

            def change(cur: StateDoc, key: str = key,
                       gone: list[tuple[str, Any]] = gone) -> Change | None:
                # (decided again on the store's copy: approved, declined meanwhile)
                why = _stale(cur.approvals[key], now) if key in cur.approvals else None
                if why is None:
                    return None
                gone[:] = [why]
                return Change(approvals={key: None})

            def describe(cur: StateDoc, new: StateDoc, key: str = key,
                         gone: list[tuple[str, Any]] = gone) -> AuditDraft:
                why, shown = gone[0]
                return AuditDraft("killgate/auto", "approval.expire", {"approval": key}, why,
                                  shown, None)

            _, ev = await self.state.write(change, describe)
            if ev is not None:
                dropped += 1
                event(log, "approval_expired", logging.WARNING, approval=key)
        return dropped

    def _left_alone(self, key: str, why: str) -> None:
        if key in self.unknown:
            return
        self.unknown.add(key)
        if self.counters is not None:
            self.counters.inc("killgate_approval_unknown_action_total")
        event(log, "approval_unknown_action_kept", logging.WARNING, approval=key, problem=why,
              detail="left alone: the version that wrote it expires or applies it; "
                     "finish the upgrade (or decline it there)")

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except (StateError, AuditError) as exc:
                event(log, "approval_sweep_failed", logging.WARNING, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a background task must not die
                event(log, "approval_sweep_error", logging.ERROR, exc=exc, error=repr(exc))

    def start(self, interval: float = 1.0) -> None:
        self._task = asyncio.create_task(self._run(interval), name="approval-sweep")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
