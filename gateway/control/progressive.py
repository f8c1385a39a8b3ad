"""Progressive delivery's steps: a canary's weight advanced one step per `step_interval`
while the analysis passes, paused while it is inconclusive or a kill holds the route,
replanned when a reload changes the steps, and the canary promoted after the last one.

A base of `rollout.RolloutDriver` (which judges the canary each round and calls
`_progress` with the verdict); every change is a compare-and-set through `Sync.write`
with its audit event, so every instance may reach the same step and only the first write
changes anything.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.config import RouteConfig
from gateway.control.table import TableHolder
from gateway.domain.analysis import Verdict
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.overrides import with_stable
from gateway.domain.rolledoff import cleared
from gateway.domain.rolloutsteps import (
    kill_holding,
    progressive_pct,
    rolling,
    rolls_out,
    step_index,
)
from gateway.domain.statedoc import Change, Progress, StateDoc
from gateway.log import event
from gateway.state.sync import Sync

__all__ = ["ProgressiveSteps", "weights_of"]

log = logging.getLogger("killgate.rollout")  # (the driver's: one logger for its events)


class ProgressiveSteps:
    """The steps of progressive delivery (see the module docstring)."""

    # the driver's state these read (RolloutDriver's)
    holder: TableHolder
    sync: Sync
    instance: str
    clock: Callable[[], float]
    shadow_gate: Callable[[RouteConfig], str | None] | None
    recent: dict[str, deque[dict[str, Any]]]

    if TYPE_CHECKING:  # (RolloutDriver's)
        def _replaced(self, rc: RouteConfig) -> bool: ...

    async def _progress(self, rc: RouteConfig, stable: str, canary: str,
                        verdict: Verdict) -> None:
        assert rc.analysis is not None and rc.analysis.steps
        steps = rc.analysis.steps
        prog = self.holder.doc.progress.get(rc.name)
        now = self.clock()
        # this canary's rollout (not an earlier deployment's under its name: tablebuild)
        mine = rolling(rc, canary, prog)
        if prog is not None and mine and prog.get("state") in ("done", "failed"):
            return
        if not rolls_out(rc, canary):  # the file gives it weight 0 (domain/rolloutsteps.py)
            if prog is not None and mine \
                    and prog.get("state") in ("running", "paused") \
                    and prog.get("held") != "weight":  # shown (and audited) as paused
                # held: once the file gives it a weight again, its step starts again (as
                # after a kill); resumed on the old `since`, a canary back after an hour
                # at 0 was stepped up on its first passed verdict, its step unobserved
                await self._set_progress(rc, prog, {**prog, "state": "paused",
                                                    "held": "weight"}, "progressive.pause")
            return  # not started, not advanced
        # what the writes below start from: this canary's rollout, on this file's steps
        base: Progress = prog if prog is not None else {}
        if prog is not None and mine and prog.get("steps") not in (None, steps):
            # a reload (or another instance's file) changed the plan: go on from the step
            # routing uses now (rolloutsteps.step_index), recorded with this plan by the next
            # write; one the edit raised (to the new first step) gets a whole step_interval
            at = step_index(prog, steps) or 0
            base = {**prog, "step": at, "steps": list(steps)}
            if progressive_pct(prog) < steps[at]:
                await self._set_progress(rc, prog, {**base, "since": now},
                                         "progressive.replan")
                return
        killed = kill_holding(self.holder.doc, rc.name, (stable, canary))
        if killed is not None:
            # an operator's kill: never stepped up or promoted on the counts from before it
            if prog is not None and mine and prog.get("held") != killed:
                await self._set_progress(rc, prog, {**base, "state": "paused", "held": killed},
                                         "progressive.pause")
            return
        if prog is not None and mine and prog.get("held"):
            # the kill was lifted: the step starts again, judged on what comes from now on
            resumed: Progress = {k: v for k, v in base.items() if k != "held"}  # type: ignore[assignment]
            await self._set_progress(rc, prog, {**resumed, "since": now, "state": "running"},
                                     "progressive.resume")
            return
        if prog is None or not mine:
            held = (self.shadow_gate(rc) if self.shadow_gate is not None
                    and rc.shadow is not None and rc.shadow.version == canary else None)
            if held is not None:  # a shadow becomes a canary only once it agreed enough
                self.recent[rc.name][-1]["held"] = held
                event(log, "progressive_held", route=rc.name, canary=canary, reason=held)
                return
            v = rc.version(canary)
            assert v is not None
            await self._set_progress(rc, prog, {"canary": canary, "step": 0, "since": now,
                                                "state": "running", "url": v.url,
                                                "artifact": v.artifact}, "progressive.start")
            return
        if verdict.status == "inconclusive":
            if prog.get("state") != "paused":
                await self._set_progress(rc, prog, {**base, "state": "paused"},
                                         "progressive.pause")
            return
        if verdict.status != "passed":
            return
        if now - float(prog.get("since", now)) < rc.analysis.step_interval:
            if prog.get("state") == "paused":
                await self._set_progress(rc, prog, {**base, "state": "running"},
                                         "progressive.resume")
            return
        step = int(base.get("step", 0))
        if step + 1 < len(steps):
            await self._set_progress(rc, prog, {**base, "step": step + 1, "since": now,
                                                "state": "running"}, "progressive.step")
        else:
            await self._promote(rc, prog, canary)

    async def _set_progress(self, rc: RouteConfig, expected: Progress | None,
                            new_prog: Progress, action: str) -> None:
        steps = rc.analysis.steps if rc.analysis is not None and rc.analysis.steps else []
        if steps and "steps" not in new_prog:
            new_prog = {**new_prog, "steps": list(steps)}  # what its `step` indexes

        def change(cur: StateDoc) -> Change | None:
            if cur.progress.get(rc.name) != expected or self._replaced(rc) or (
                    rc.name in cur.overrides and new_prog.get("held") != "override"):
                return None  # another instance moved first
            if new_prog.get("state") != "paused" and kill_holding(
                    cur, rc.name, (rc.stable, new_prog.get("canary", ""))) is not None:
                return None  # a kill came meanwhile: the next round pauses
            return Change(progress={rc.name: new_prog})

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft("killgate/auto", action, {"route": rc.name},
                              f"progressive delivery: step {new_prog['step'] + 1} of "
                              f"{len(steps)}, state {new_prog['state']}"
                              + (f", held by {_holder(new_prog['held'])}"
                                 if new_prog.get("held") else ""),
                              expected, new_prog, "", self.instance)

        await self.sync.write(change, describe)

    async def _promote(self, rc: RouteConfig, prog: Progress, canary: str) -> None:
        now = utc_now()

        def change(cur: StateDoc) -> Change | None:
            if cur.progress.get(rc.name) != prog or rc.name in cur.overrides \
                    or self._replaced(rc) or kill_holding(cur, rc.name, (rc.stable, canary)) is not None:
                return None
            ch = with_stable(rc, canary, "promote", "killgate/auto",
                             "progressive delivery completed", now)
            return Change(overrides=ch.overrides, history=ch.history,
                          progress={rc.name: {**prog, "state": "done"}},
                          rolled_off=cleared(cur, rc, (canary,)))  # (it proved itself)

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft("killgate/auto", "progressive.promote", {"route": rc.name,
                                                                       "version": canary},
                              "every step passed its analysis", weights_of(cur, rc),
                              weights_of(new, rc), "", self.instance)

        await self.sync.write(change, describe)


def _holder(held: str) -> str:
    return ("a runtime override" if held == "override" else "the file's weight 0"
            if held == "weight" else f"the {held} kill")


def weights_of(doc: StateDoc, rc: RouteConfig) -> dict[str, float]:
    ov = doc.overrides.get(rc.name)
    if ov is not None:
        return dict(ov.weights)
    return {v.name: v.weight for v in rc.versions}
