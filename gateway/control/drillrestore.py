"""The restore and settle phases of a drill (`DrillRunner`'s, control/drills.py).

Owns `Restoration`: the restore asked of the fleet (through another instance if the drill's
admin URL died), a drill restored and ended meanwhile by someone else, and the settle that
watches the fleet come back, waiting for an instance slow to, up to time_to_restore's max
target. The runner's state these phases read and write is declared here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.control.drillended import ended as ended_elsewhere
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.control.drillreach import Reach
from gateway.control.drillrejoin import applied_by, receipt_note
from gateway.domain.drillfinish import iso_to_unix
from gateway.domain.drillplan import Plan, duration
from gateway.domain.drillreport import Marks, Obs, Restoring
from gateway.domain.drillverdict import kept

__all__ = ["END_MARGIN", "NOT_DURABLE", "Restoration"]

#: a restore (or end) answered 503 not_durable for the whole of its retries: committed and
#: in force on the fleet, on no redis replica yet (the primary lost it: after a failover,
#: until one rejoins it). Said so: "RESTORE FAILED" and "not as before" sent an operator to
#: `drill restore`, which found nothing to restore (tests/test_drill_restore_not_durable.py)
NOT_DURABLE = ("the restore is in force on the fleet, but no redis replica has confirmed it "
               "(state.min_replicas), so a failover before one is back could undo it: bring "
               "a replica back to the primary (`INFO replication`, connected_slaves); there is "
               "nothing to run again")

#: seconds before the drill's own deadline at which the settle stops waiting (its end
#: must reach the fleet while the drill is not yet overdue)
END_MARGIN = 10.0


class Restoration:
    """The restore and settle phases, over the runner's state (control/drills.py)."""

    plan: Plan
    api: AdminClient
    reach: Reach
    say: Callable[[str], None]
    marks: Marks
    obs: list[Obs]
    stopped: str | None
    started_with: list[str]
    not_back: list[str]
    opened_at: float | None
    t0_unix: float

    def now(self) -> float:
        raise NotImplementedError

    async def _hold(self, seconds: float) -> None:
        raise NotImplementedError

    async def _restore(self, drill: str) -> dict[str, Any]:
        self.marks.restore_sent = self.now()
        try:
            out = await asyncio.shield(self.reach.call(
                "POST", f"/v1/drills/{drill}/restore",
                {"reason": f"drill ended ({self.stopped or 'done'})"}, retry_for=30.0))
        except DrillApiError as exc:
            self.api = self.reach.api
            if exc.status == 404 and (done := await ended_elsewhere(self.api, drill)) is not None:
                return self._ended_elsewhere(done)
            if exc.type == "not_durable":  # (committed and in force: not to run again)
                self.say(f"RESTORE NOT DURABLE: {NOT_DURABLE} ({exc})")
                return {"error": str(exc), "not_durable": True}
            self.say(f"RESTORE FAILED: {exc}; run: killgate --admin {self.api.base} drill restore "
                     f"{drill}")
            return {"error": str(exc)}
        self.api = self.reach.api
        self.marks.restore_done = self.now()
        applied = out.get("applied", {})
        self.say(f"restored: generation {out.get('generation')} applied by "
                 f"{applied_by(self.started_with, applied)}")
        for why in kept(out):
            self.say(why)
        if (note := receipt_note(self.started_with, applied, self.not_back)) is not None:
            self.say(note)  # (the warning, if any, after the check: drills.py's _finish)
        return out

    def _ended_elsewhere(self, ended: dict[str, Any]) -> dict[str, Any]:
        """The drill was restored and ended while it ran, by someone else (`killgate drill
        restore`, the fleet past its deadline): said so, and measured until then."""
        at = iso_to_unix(str(ended.get("restored_at", ""))) - self.t0_unix
        if 0 < at < self.now():
            self.marks.restore_sent = self.marks.restore_done = at
        why = (f"the drill was restored and ended meanwhile by {ended.get('actor')} at "
               f"{ended.get('time')} (killgate drill restore, or the fleet past its deadline)")
        self.say(why)
        if self.stopped is None:
            self.stopped = why
        return {"elsewhere": ended}

    async def _settle(self, seconds: float, to: str | None) -> None:
        """Watch the fleet for `seconds` after the restore; then an instance that has not yet
        shown an answer from before the drill is waited for, up to time_to_restore's max
        target after the restore was asked for: an instance slow to come back (after a
        store-loss drill, its reconnect backoff) is measured, not called never restored. (A
        drill stopped early, by Ctrl-C or an abort, does not wait longer than its settle.)"""
        await asyncio.sleep(seconds)
        sent, target = self.marks.restore_sent, self.plan.targets.time_to_restore_ms
        limit = target.max or target.p99 or target.p50
        if self.stopped or sent is None or limit is None:
            return
        deadline = sent + limit / 1000
        if self.opened_at is not None:  # (past the drill's own deadline the fleet counts
            # it overdue, and closes it: its end would be refused)
            deadline = min(deadline, self.opened_at + duration(self.plan) - END_MARGIN)
        waiting = Restoring(self.plan, to, sent)
        while waiting.left(self.obs):
            if (left := deadline - self.now()) <= 0 or self.stopped:
                return  # (a Ctrl-C meanwhile ends it too)
            await self._hold(min(0.05, left))
