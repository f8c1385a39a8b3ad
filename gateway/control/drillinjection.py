"""The inject and measure phases of a drill (`DrillRunner`'s, control/drills.py).

Owns `Injection`: the fault asked of the fleet (its receipt said), the admin addresses of
instances that had published none when the drill started read again, and the measure
phase: a hold, or for a store-loss drill the store's outage waited out and the instances
it started with waited for until they heartbeat again; and at the end of the hold, the
instances it started with asked whether they run the injection (`_held`). The runner's
state these phases read and write is declared here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.control.drillasks import Budget
from gateway.control.drillbehind import Behind, behind
from gateway.control.drillfleet import published
from gateway.control.drillguards import Pause
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.control.drillrejoin import applied_by, wait_rejoined
from gateway.domain.drillplan import Plan, fault_ttl
from gateway.domain.drillreport import Marks
from gateway.errors import StateError
from gateway.tasks import unless_stopped

__all__ = ["HELD_FOR", "Injection"]

#: seconds the check at the end of the hold may ask for (the restore waits for it)
HELD_FOR = 5.0


class Injection:
    """The inject and measure phases, over the runner's state (control/drills.py)."""

    plan: Plan
    api: AdminClient
    say: Callable[[str], None]
    pause: Pause | None
    marks: Marks
    drill: str | None
    stopped: str | None
    _stop: asyncio.Event
    started_with: list[str]
    lease: float
    not_back: list[str]
    admin_of: dict[str, str]
    readyz_keys: dict[str, str]
    poll: float
    #: the injection's generation (None: not applied, or not said)
    injected: int | None = None

    def now(self) -> float:
        raise NotImplementedError

    async def _hold(self, seconds: float) -> None:
        raise NotImplementedError

    def stop(self, why: str) -> None:
        raise NotImplementedError

    async def _inject(self, to: str | None) -> Any:
        plan = self.plan
        body: dict[str, Any] = {"reason": plan.reason}
        if plan.kind in ("kill", "store_loss"):
            body["scope"] = plan.kill_scope
        elif plan.kind == "rollback":
            body["to"] = to
        else:
            body["ttl"] = f"{fault_ttl(plan)}s"
        self.marks.inject_sent = self.now()
        out = await self.api.call("POST", f"/v1/drills/{self.drill}/inject", body,
                                  retry_for=10.0)  # (same key: an answer lost is replayed)
        self.marks.inject_done = self.now()
        gen = out.get("generation")
        self.injected = gen if isinstance(gen, int) and not isinstance(gen, bool) else None
        applied = out.get("applied", {})
        # (the receipt's elapsed_ms is the wait for acks after the commit, not the
        # propagation time: near 0 when every instance had acked by then)
        took = round((self.marks.inject_done - self.marks.inject_sent) * 1000, 1)
        self.say(f"injected: generation {out.get('generation')} applied by "
                 f"{applied_by(self.started_with, applied)}; the call "
                 f"took {took} ms ({applied.get('elapsed_ms')} ms of it waiting for acks)")
        await self._addresses()
        return applied

    async def _addresses(self) -> None:
        """The admin addresses of instances the drill started with that had published none
        then (an instance's first heartbeats precede its listeners): read again once the
        injection is applied, so the check after the restore can ask them (control/
        drillbehind.py). Best effort: a failed read leaves them unasked, as before."""
        if all(n in self.admin_of for n in self.started_with):
            return
        try:
            found = published((await self.api.call("GET", "/v1/status")).get("instances"))
        except DrillApiError:
            return
        for name in self.started_with:
            if name in found:
                self.admin_of.setdefault(name, found[name])

    async def _held(self, data_of: dict[str, str]) -> Behind | None:
        """At the end of the hold, before the restore: the instances the drill started
        with still running an older generation than the injection's, asked as after the
        restore (control/drillbehind.py), named at once (None: nothing to ask, or
        stopped). The drill's traffic sees only the instances it reaches: those
        `--instances` leaves out, and each worker of a `--workers` group (one data
        address): a worker cut off from the store before the kill never held it, the
        receipt counting live instances only said nothing of it, and once back it ran the
        restore, so the check after the restore found it so and the drill passed.
        Bounded by HELD_FOR (the drill's kill stays in force until its restore)."""
        if self.injected is None or self.drill is None or not self.started_with:
            return None
        found = await unless_stopped(behind(
            self.api, self.started_with, self.admin_of, self.injected, self.drill,
            self.readyz_keys, 0.0, Budget(seconds=HELD_FOR), data_of=data_of,
            poll=self.poll), self._stop)
        if found is not None and found.late:
            self.say(f"INJECTION NOT HELD by {', '.join(found.late)}: alive at the end of "
                     "the hold, running an older generation than the injection's "
                     f"({self.injected}), cut off from the store? (the drill's traffic "
                     "does not reach it: it served the state from before unmeasured)")
        return found

    async def _measure(self) -> None:
        plan = self.plan
        if plan.kind != "store_loss":
            await self._hold(plan.hold)
            return
        assert self.pause is not None
        await self._hold(min(1.0, plan.hold))  # every instance enforces the kill first
        if self.stopped:
            return
        start = self.now()
        try:
            await self.pause(plan.hold)
        except StateError as exc:  # (refused: restored and ended as aborted, never left open)
            self.stop(f"the store could not be paused: {exc}")
            return
        self.say(f"store paused for {plan.hold:g}s")
        # the outage cannot be cut short (redis ends a pause by itself): wait it out
        await asyncio.sleep(max(0.0, start + plan.hold - self.now()))
        self.marks.outage = (start, self.now())
        # (a lease may have lapsed meanwhile: the restore's receipt would not count them)
        limit = self.lease + 3.0
        not_back = await wait_rejoined(self.api, self.started_with, plan.hold, limit,
                                       self._stop)
        if self.stopped:  # (Ctrl-C, an abort: restored at once, the rest not waited for)
            return
        self.not_back = not_back
        if self.not_back:
            self.say(f"WARNING: not heartbeating again {limit:g}s after the store's return: "
                     f"{', '.join(self.not_back)} (the restore's receipt cannot count them)")
