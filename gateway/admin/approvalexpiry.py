"""The expiry of two-person approval requests (CONTRACT §5.2): a background sweep.

Owns the task that, every interval, drops the open requests past their ttl (and any
stored request that is not a valid record), each in a state change of its own with its
`approval.expire` audit event. Another instance may sweep the same one: the second finds
nothing to drop. A failed sweep is logged and tried again. The requests themselves are
approvals.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.admin.approvalrecord import Approval
from gateway.admin.ports import Current, StateWriter
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, StateError
from gateway.log import event
from gateway.tasks import cancel

__all__ = ["ApprovalExpiry"]

log = logging.getLogger("killgate.admin")


class ApprovalExpiry:
    def __init__(self, current: Current, state: StateWriter, clock: Any = time.time) -> None:
        self.current = current
        self.state = state
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Drop expired (and unreadable) requests, each with an `approval.expire` event.
        Another instance may sweep the same one: the second finds nothing to drop."""
        now = self.clock()
        doc = self.current.doc
        stale = []
        for key, raw in doc.approvals.items():
            try:
                if Approval.from_json(raw).expires <= now:
                    stale.append(key)
            except ValueError:
                stale.append(key)
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
