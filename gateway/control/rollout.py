"""Automatic canary analysis, automatic rollback, and progressive delivery.

Owns the analysis loop of this process. For every route with `analysis`, every
`analysis.interval`: publish this process's window counts to the state store, read every
instance's, merge them (so the verdict covers the fleet, not one process), and let
`gateway.domain.analysis` judge the canary against the stable. Actions go through
`Sync.write`, so they are atomic with their audit event and idempotent: every
instance may reach the same verdict, only the first write changes anything.
- `failed`: canary weight 0, the route latched (override `auto_rollback`), an audit event
  by `killgate/auto` with the evidence (control/events.py posts it to the webhooks);
- with `steps`: the canary's weight advances one step per `step_interval` while the
  verdict is `passed`, waits while `inconclusive`, and rolls back on `failed`; after the
  last step the canary is promoted (the steps: `progressive.ProgressiveSteps`, a base).
A latched route (an operator's override) is left alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import RouteConfig
from gateway.control.freshness import Heard, recent
from gateway.control.progressive import ProgressiveSteps, weights_of
from gateway.control.table import TableHolder
from gateway.domain.analysis import Sample, Verdict, analyze, merge
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.overrides import effective_stable
from gateway.domain.rolledoff import recorded
from gateway.domain.rolloutsteps import (
    canary_of,
    rolling,
    step_index,
)
from gateway.domain.statedoc import Change, RouteOverride, StateDoc, kill_key
from gateway.domain.stats import WindowStats
from gateway.errors import AuditError, StateError
from gateway.log import event
from gateway.state.sync import Sync
from gateway.tasks import cancel

__all__ = ["RolloutDriver"]

log = logging.getLogger("killgate.rollout")
RECENT = 10  # verdicts kept per route for GET /v1/status (the console shows them)


class RolloutDriver(ProgressiveSteps):
    def __init__(self, holder: TableHolder, sync: Sync, instance: str,
                 ejections: Callable[[str, str, float], int] | None = None,
                 clock: Callable[[], float] = time.time,
                 shadow_gate: Callable[[RouteConfig], str | None] | None = None) -> None:
        self.ejections = ejections
        #: why a route's shadow may not get traffic yet (control/shadow.py); None: it may
        self.shadow_gate = shadow_gate
        self.holder = holder
        self.sync = sync
        self.instance = instance
        self.clock = clock
        self.stats = WindowStats()
        self.verdicts: dict[str, Verdict] = {}
        self.recent: dict[str, deque[dict[str, Any]]] = {}  # the last verdicts, for status
        self._last: dict[str, float] = {}  # route -> monotonic time of its last round
        self._heard: dict[str, Heard] = {}  # route -> the blobs' times at the last read
        self._task: asyncio.Task[None] | None = None
        self._analysed: frozenset[str] = frozenset()
        self._config: object = None  # the config `_targets` is of
        #: (route, version) -> (url, artifact) of the config the counts were kept under
        self._targets: dict[tuple[str, str], tuple[str, str | None]] = {}
        #: hands over the "ok" outcomes held back for `served` (`wiring.dataplane.Outcomes`)
        self._held: Callable[[], None] = _nothing
        self._refresh_routes()
        # (at the swap: a new deployment's counts from its first request are its own)
        holder.listen(lambda old, new: self._refresh_routes())

    def _refresh_routes(self) -> None:
        cfg = self.holder.loaded.config
        if cfg is self._config:
            return
        self._config = cfg
        analysed = frozenset(rc.name for rc in cfg.routes if rc.analysis is not None)
        if analysed != self._analysed:
            # what is held came while the old set held: counted by it, as if told of each
            self._held()
            self._analysed = analysed
        # a version a reload redeployed under its name (another url or artifact) or dropped:
        # its counts are the old deployment's, never the new one's evidence (judged on them,
        # a fixed canary was rolled back on the broken one's errors, a broken one passed on
        # the good one's)
        targets = {(rc.name, v.name): (v.url, v.artifact) for rc in cfg.routes
                   for v in rc.versions}
        replaced = [k for k, t in self._targets.items() if targets.get(k) != t]
        if replaced:
            self._held()  # (held before the swap: the old deployment's too)
            for route, version in replaced:
                self.stats.forget_version(route, version)
        self._targets = targets

    # ------------------------------------------------------------------ Observer

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        if route in self._analysed:
            self.stats.record(route, version, kind != "ok", latency, self.clock())

    def served(self, batch: Mapping[tuple[str, str], list[float]], now: float) -> None:
        """"ok" exchanges of one second, a batch at a time (`wiring.dataplane.Outcomes`):
        the same counts as `outcome` of each."""
        analysed = self._analysed
        record = self.stats.record_ok
        for (route, version), latencies in batch.items():
            if route in analysed:
                record(route, version, latencies, now)

    def batched_by(self, flush: Callable[[], None]) -> None:
        self._held = flush

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rollout")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            self._refresh_routes()
            # rounds are due by the monotonic clock: a wall clock stepped back (NTP) held
            # every round, automatic rollback included, for as long as the step
            now = time.monotonic()
            for rc in self.holder.loaded.config.routes:
                if rc.analysis is None:
                    continue
                # by the last round, not a due time set then: an interval a reload shortens
                # applies at once (it waited out the old one)
                if now - self._last.get(rc.name, -math.inf) >= rc.analysis.interval:
                    self._last[rc.name] = now
                    try:
                        await self.evaluate(rc)
                    except (StateError, AuditError) as exc:
                        event(log, "analysis_action_failed", logging.WARNING, route=rc.name,
                              error=str(exc))
                    except Exception as exc:  # noqa: BLE001 - a bug must not end analysis
                        # for every route until the next restart: logged with its traceback,
                        # and this route is tried again at its next interval
                        event(log, "analysis_failed", logging.ERROR, exc=exc, route=rc.name)
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ one round

    async def _fleet_samples(self, rc: RouteConfig) -> dict[str, Sample] | None:
        assert rc.analysis is not None
        now = self.clock()
        window = rc.analysis.window
        self._held()  # (the "ok"s held back count too)
        local = self.stats.window(rc.name, window, now)
        if self.ejections is not None:
            for v in rc.versions:
                n = self.ejections(rc.name, v.name, window)
                if n:
                    local.setdefault(v.name, Sample()).ejections = n
        # (each version's deployment beside its counts, as a digest: a url may hold
        # credentials; see below)
        mine = {v.name: hashlib.sha256(f"{v.url}\x00{v.artifact}".encode()).hexdigest()[:16]
                for v in rc.versions}
        blob = {"instance": self.instance, "t": now, "window": window,
                "versions": {v: s.to_json() for v, s in local.items()}, "targets": mine}
        try:
            await self.sync.store.put_stats(rc.name, self.instance, blob)
            blobs = await self.sync.store.get_stats(rc.name)
        except StateError:
            return None
        # (both ways: an instance whose clock runs ahead would otherwise have its counts
        # taken until its future time plus the bound, long after it stopped; and an
        # instance still publishing is taken whatever its clock: freshness.py)
        fresh, self._heard[rc.name] = recent(blobs, self._heard.get(rc.name, {}), now,
                                             2 * rc.analysis.interval + 1)
        per: dict[str, list[Sample]] = {}
        try:
            for b in fresh:
                # an instance that has not read the file redeploying a version yet (a
                # ConfigMap reaches pods up to a minute apart) counts the old deployment
                # under its name: not this one's evidence (`_refresh_routes`); a blob
                # without targets is an older version's
                theirs = b.get("targets")
                for v, d in b.get("versions", {}).items():
                    if isinstance(theirs, dict) and theirs.get(v) != mine.get(v):
                        continue
                    per.setdefault(v, []).append(Sample.from_json(d))
        except (ValueError, KeyError, TypeError):
            return None
        return {v: merge(xs) for v, xs in per.items()}

    async def evaluate(self, rc: RouteConfig) -> Verdict | None:
        """One analysis round for `rc`: verdict, then the action it calls for."""
        assert rc.analysis is not None
        self._refresh_routes()  # (counts of a deployment a reload replaced: dropped first)
        doc = self.holder.doc
        stable = effective_stable(doc, rc)
        canary = canary_of(rc, stable)
        if canary is None or rc.name in doc.overrides:
            prog = doc.progress.get(rc.name)
            if canary is not None and prog is not None and rolling(rc, canary, prog) \
                    and prog.get("state") in ("running", "paused") \
                    and prog.get("held") != "override":
                # held while the override governs: after `release` its step starts again
                await self._set_progress(rc, prog, {**prog, "state": "paused",
                                                    "held": "override"}, "progressive.pause")
            return None  # latched by an operator (or rolled back): hands off
        samples = await self._fleet_samples(rc)
        verdict = analyze(None if samples is None else samples.get(canary, Sample()),
                          None if samples is None else samples.get(stable, Sample()),
                          rc.analysis, rc.analysis.window)
        self.verdicts[rc.name] = verdict
        self.recent.setdefault(rc.name, deque(maxlen=RECENT)).append(
            {"time": utc_now(), "canary": canary, "stable": stable, "verdict": verdict.status,
             "reasons": list(verdict.reasons), "evidence": verdict.evidence})
        event(log, "analysis", route=rc.name, canary=canary, verdict=verdict.status,
              reasons=list(verdict.reasons))
        if verdict.status == "failed":
            if kill_key("version", rc.name, stable) in doc.kills:
                # the operator killed the stable (the canary took its traffic): a rollback
                # to it would leave the route nothing to serve (the canary no spare)
                held = f"no automatic rollback to {stable}: the {stable} kill stands"
                self.recent[rc.name][-1]["held"] = held
                event(log, "auto_rollback_held", logging.WARNING, route=rc.name,
                      canary=canary, stable=stable, reason=held)
                if rc.analysis.steps:  # (the kill holds the rollout: paused, `held`)
                    await self._progress(rc, stable, canary, verdict)
                return verdict
            await self._rollback(rc, stable, canary, verdict)
        elif rc.analysis.steps:
            await self._progress(rc, stable, canary, verdict)
        return verdict

    async def _rollback(self, rc: RouteConfig, stable: str, canary: str,
                        verdict: Verdict) -> None:
        now = utc_now()
        reason = "canary analysis failed: " + "; ".join(verdict.reasons)

        def change(cur: StateDoc) -> Change | None:
            if rc.name in cur.overrides or self._replaced(rc) \
                    or kill_key("version", rc.name, stable) in cur.kills:
                return None  # someone (another instance, an operator) already acted
            weights = {v.name: (100.0 if v.name == stable else 0.0) for v in rc.versions}
            ov = RouteOverride(stable, weights, "killgate/auto", reason, now, "auto_rollback")
            prog = cur.progress.get(rc.name)
            return Change(overrides={rc.name: ov},
                          progress={} if prog is None else {rc.name: {**prog, "state": "failed"}},
                          rolled_off=recorded(cur, rc, (canary,), "auto_rollback",
                                              "killgate/auto", now))

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft("killgate/auto", "auto_rollback", {"route": rc.name,
                                                                 "version": canary},
                              reason, {"weights": weights_of(cur, rc)},
                              {"weights": weights_of(new, rc), "latched": True}, "",
                              self.instance, extra={"evidence": verdict.evidence})

        new, ev = await self.sync.write(change, describe)
        if ev is None:
            return
        event(log, "auto_rollback", logging.WARNING, route=rc.name, canary=canary,
              reasons=list(verdict.reasons), generation=new.generation)

    def _replaced(self, rc: RouteConfig) -> bool:
        """Whether a reload replaced the route config a round judged (while it read the
        store): its action, computed on versions the file may no longer have, is dropped
        (the next round judges the new one)."""
        return self.holder.loaded.config.route(rc.name) != rc

    def status(self, route: str) -> dict[str, Any] | None:
        v = self.verdicts.get(route)
        prog = self.holder.doc.progress.get(route)
        if v is None and prog is None:
            return None
        rc = self.holder.loaded.config.route(route)
        steps = rc.analysis.steps if rc is not None and rc.analysis is not None else None
        out: dict[str, Any] = {}
        if v is not None:
            out["verdict"] = v.status
            out["reasons"] = list(v.reasons)
            out["evidence"] = v.evidence
            out["recent"] = list(reversed(self.recent.get(route, ())))  # newest first
        if prog is not None:
            step = step_index(prog, steps) if steps else None
            out["progress"] = {**prog, "steps": steps,
                               "weight": steps[step] if steps and step is not None else None}
        return out


def _nothing() -> None:
    return None
