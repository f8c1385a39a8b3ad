"""The expiry of two-person approval requests (CONTRACT §5.2): a background sweep.

Owns the task that, every interval, drops the open requests past their ttl (and any
stored request that is not a valid record), each in a state change of its own with its
`approval.expire` audit event. A well-formed request of an action this version does not
know (a newer version wrote it: a rolling upgrade) is left alone, logged once and counted
(`killgate_approval_unknown_action_total`): dropped as invalid, a request made on the new
version vanished whenever an old instance swept first. Another instance may sweep the
same one: the second finds nothing to drop. A failed sweep is logged and tried again.
The requests themselves are approvals.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.admin.approvalrecord import Approval, UnknownAction
from gateway.admin.ports import Counters, Current, StateWriter
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, StateError
from gateway.log import event
from gateway.tasks import cancel

__all__ = ["ApprovalExpiry"]

log = logging.getLogger("killgate.admin")


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
        """Drop expired (and unreadable) requests, each with an `approval.expire` event.
        Another instance may sweep the same one: the second finds nothing to drop."""
        now = self.clock()
        doc = self.current.doc
        stale = []
        unknown = set()
        for key, raw in doc.approvals.items():
            try:
                if Approval.from_json(raw).expires <= now:
                    stale.append(key)
            except UnknownAction as exc:
                unknown.add(key)
                self._left_alone(key, str(exc))
            except ValueError:
                stale.append(key)
        self.unknown &= unknown  # (decided since, by a version that knows them)
        dropped = 0
        for key in stale:
            gone: list[Any] = []

            def change(cur: StateDoc, key: str = key,
                       gone: list[Any] = gone) -> Change | None:
                if key not in cur.approvals:
                    return None
                gone[:] = [cur.approvals[key]]
                return Change(approvals={key: None})

            def describe(cur: StateDoc, new: StateDoc, key: str = key,
                         gone: list[Any] = gone) -> AuditDraft:
                raw = gone[0] if gone else None
                try:
                    shown: Any = Approval.from_json(raw).public()
                    why = f"not approved by {shown['needs']} principals within its ttl"
                except ValueError:
                    shown, why = raw, "not a valid approval record"
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
