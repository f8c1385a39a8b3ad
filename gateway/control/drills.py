"""Runs one recovery drill against a live fleet, phase by phase, and writes its report.

Phases: discover (the route, and every instance from its heartbeat) → open (the route's
state is recorded, `drill.start`) → steady state (synthetic traffic to every instance) →
inject → measure (hold) → restore, which always runs: after the hold, on an abort
condition, on Ctrl-C (`stop`), on a failed steady-state check → settle (time to
restore) → verdict → end (`drill.end`). A drill process that dies leaves an open drill
that `killgate drill restore ID` undoes. HTTP lives in `drillload`, what the drill runs
against in `drillfleet`, the report's fields in `drilloutcome`, the inject and measure
phases in `drillinjection`, the restore and settle phases in `drillrestore`, analysis in
`domain.drillreport` (`domain.drillverdict`: what the restore kept); the store pause is
handed in (the CLI owns the store access).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.control import drilloutcome
from gateway.control.drillabort import ErrorWatch, own_counts
from gateway.control.drillbehind import Behind, behind, catch_up_for
from gateway.control.drillfleet import discover, no_keys, published, readyz_keys, with_builds
from gateway.control.drillguards import (
    Check,
    Pause,
    same_route,
    store_skip,
    token_too_short,
)
from gateway.control.drillinjection import Injection
from gateway.control.drillload import AdminClient, DrillApiError, Traffic, resolve_probe
from gateway.control.drillreach import Reach
from gateway.control.drillrejoin import short_receipt
from gateway.control.drillrestore import Restoration
from gateway.domain.audit import utc_now
from gateway.domain.drillplan import Plan, duration, too_long
from gateway.domain.drillreport import Marks, Obs, analyse, steady_problems
from gateway.domain.drilltoken import HEADER
from gateway.tasks import unless_stopped

__all__ = ["DrillRunner"]

_DRILL_ID = re.compile(r"[A-Za-z0-9-]{1,64}")  # (the grammar of admin/drills.py's ids)


class DrillRunner(Restoration, Injection):
    def __init__(self, plan: Plan, session: aiohttp.ClientSession, admin: AdminClient,
                 say: Callable[[str], None], pause: Pause | None = None,
                 check: Check | None = None) -> None:
        self.plan = plan
        self.session = session
        self.api = admin
        self.reach = Reach(admin, (), say)  # (restore and end: another instance if need be)
        self.say = say
        self.pause = pause
        self.check = check
        self.t0 = time.monotonic()
        self.t0_unix = time.time()  # the same instant on the wall clock (for comparisons)
        self.marks = Marks()
        self.stopped: str | None = None  # why the drill stopped early
        self._stop = asyncio.Event()
        self.drill: str | None = None
        self.obs: list[Obs] = []
        self.report: dict[str, Any] = {}
        self.started_with: list[str] = []  # the instances heartbeating when it started
        self.lease = 5.0  # their state.instance_lease
        self.poll = 0.25  # their state.poll_interval
        self.not_back: list[str] = []  # those not heartbeating again after a store outage
        self.admin_of: dict[str, str] = {}  # their admin URLs, as published then
        self.opened_at: float | None = None  # when it asked to open (its deadline counts)
        self.readyz_keys: dict[str, str] = {}  # what an instance's /readyz proof is checked with

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stop(self, why: str) -> None:
        """Stop now and restore (Ctrl-C, an abort condition); the first reason wins."""
        if self.stopped is None:
            self.stopped = why
            self.say(f"stopping: {why}; " + ("restoring" if self.opened_at is not None
                                              else "no drill was opened"))
        self._stop.set()

    async def _hold(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------------ phases

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        started = utc_now()
        fleet = await unless_stopped(discover(self.api, plan), self._stop)
        if fleet is None:  # (a Ctrl-C while the admin API is asked: nothing opened)
            return self._refused(started, str(self.stopped))
        self.reach.admins = list(fleet["admins"])
        route = fleet["route"]
        self.started_with = sorted(fleet["status"].get("instances") or {})
        self.admin_of = published(fleet["status"].get("instances"))
        self.lease = _seconds(fleet["state"].get("instance_lease"), 5.0) or 5.0
        self.poll = _seconds(fleet["state"].get("poll_interval"), 0.25)
        if self.stopped:
            return self._refused(started, self.stopped)
        if fleet["config"].get("drill_for") is None and not plan.production:
            return self._refused(started, f"route {plan.route!r} serves users: pass "
                                 "--production to drill on it, or declare a drill route "
                                 f"(drill_for: {plan.route}, its versions, a match only "
                                 "drills send: README \"Run your first drill\")")
        if plan.abort.route is not None and \
                plan.abort.route not in fleet["status"].get("routes", {}):
            return self._refused(started, f"abort.route {plan.abort.route!r} is no route of "
                                 "this fleet: the abort condition could never fire")
        if (why := too_long(plan, fleet["drills"])) is not None:
            return self._refused(started, why)
        if (why := token_too_short(self.api.headers.get("authorization"), plan)) is not None:
            return self._refused(started, why)
        if plan.kind == "store_loss" and (why := await unless_stopped(
                store_skip(plan, fleet, self.pause, self.check), self._stop)):
            return self._refused(started, why, "skipped")
        to = plan.to or route.get("previous_known_good") or route.get("stable")
        if self.stopped:  # (interrupted during the checks above, a store's the slowest:
            # no drill is opened, none recorded as aborted for a warning to name)
            return self._refused(started, self.stopped)
        self.opened_at = self.now()
        try:
            opened = await self.api.call("POST", "/v1/drills", {
                "kind": plan.kind, "route": plan.route, "version": plan.version,
                "production": plan.production, "reason": plan.reason,
                "duration": f"{duration(plan)}s"}, retry_for=10.0)  # (its Idempotency-Key:
            # an answer lost after the commit gets the same drill, not a second one or none)
        except DrillApiError as exc:
            if exc.type != "not_durable":
                raise
            return self._refused(started, await self._close_undurable(exc))
        drill = opened.get("drill")
        if not isinstance(drill, str) or not _DRILL_ID.fullmatch(drill):
            # (it names the report's files and goes in every later URL: whatever answers
            # on the admin address must not choose a path)
            raise DrillApiError(0, "bad_answer", (
                f"the admin API at {self.api.base} opened a drill without a drill id (1-64 "
                "letters, digits and '-'): is that killgate's admin listener?"))
        self.drill = drill
        self.readyz_keys = readyz_keys(opened.get("readyz_keys"))
        if (why := no_keys(self.readyz_keys, fleet["state"], self.api.base)) is not None:
            self.say(why)
        self.say(f"drill {drill} opened ({plan.kind} on {plan.route}); if this process dies, "
                 f"run: killgate --admin {self.api.base} drill restore {drill}")
        probe = resolve_probe(plan, fleet["config"].get("match", {}), plan.kind != "rollback")
        if "token" in opened:
            probe.headers[HEADER] = opened["token"]
        traffic = Traffic(self.session, fleet["instances"], probe, plan.rate, self.t0)
        self.obs = traffic.obs
        watch_route = plan.abort.route or fleet["config"].get("drill_for") or plan.route
        watch = ErrorWatch(self.session, fleet["admins"], watch_route,
                           (lambda: own_counts(traffic.obs)) if watch_route == plan.route
                           else dict, plan.abort.error_rate,
                           plan.abort.min_requests, plan.abort.interval,
                           fallback=self.api.base, data_of=fleet["data_of"],
                           data_at=fleet["data_at"])
        tasks = [asyncio.create_task(traffic.run()),
                 asyncio.create_task(watch.run(self.stop)),
                 asyncio.create_task(same_route(plan.route, traffic, self.stop, self._stop))]
        receipts: dict[str, Any] = {}
        held: Behind | None = None  # (the check at the end of the hold)
        problems: list[str] = []
        restore: dict[str, Any] = {}
        try:
            s0 = self.now()
            await self._hold(plan.steady)
            self.marks.steady = (s0, self.now())
            problems = steady_problems(plan, to, traffic.obs, fleet["instances"],
                                       self.marks.steady)
            if problems and not self.stopped:
                self.stop("the steady-state check failed: " + "; ".join(problems))
            if not self.stopped:
                receipts["inject"] = await self._inject(to)
                await self._measure()
                if not self.stopped:
                    held = await self._held(fleet["data_of"])
        except DrillApiError as exc:
            self.stop(f"the injection failed: {exc}")
        finally:
            restore = await self._restore(drill)
            await asyncio.sleep(0)  # (the Ctrl-C handler may still set the stop reason)
            await self._settle(plan.settle if not self.stopped else min(plan.settle, 1.0), to)
            await traffic.drain()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        receipts["restore"] = restore.get("applied")
        return await self._finish(started, to, fleet, restore, receipts, watch, held)

    async def _close_undurable(self, exc: DrillApiError) -> str:
        """The open committed (the drill is open) but no redis replica confirmed it for its
        retries (after a failover, before the old master rejoins): no drill is run on a store
        that could lose its kill and restore; the one it opened, as the 503 names it, is
        closed at once, each step committed. Left open, it refused every drill of the route
        (409 drill_in_progress) until its deadline (tests/test_drill_restore_not_durable.py).
        Never "the route's one open drill": its own ended meanwhile, that was another
        operator's, restored and ended under them (tests/test_drill_close_undurable_own.py).
        Why, as the report's reason."""
        why = ("the state store has no redis replica to confirm a change (state.min_replicas: "
               "after a failover, until the old master rejoins as one), so a drill's kill and "
               "restore could be lost; bring a replica back to the primary (`INFO "
               f"replication`), then drill again ({exc})")
        ident = exc.drill
        if ident is None or not _DRILL_ID.fullmatch(ident):
            # (an admin API older than the drill id in this answer: which drill is open is
            # not guessed; the operator is told where to look)
            why = (f"a drill of route {self.plan.route!r} may be open (the admin API did not "
                   "name it): if `killgate drill history` lists one of yours open, run "
                   f"`killgate drill restore ID`; {why}")
            self.say(f"stopping: {why}")
            return why
        outcome: DrillApiError | str = "closed at once"
        for step, body in (("restore", {"reason": "drill ended (store not durable)"}),
                           ("end", {"verdict": "aborted", "summary": {},
                                    "reason": self.plan.reason})):
            try:  # (the end's outcome decides: an end restores first)
                await self.api.call("POST", f"/v1/drills/{ident}/{step}", body,
                                    retry_for=2.0)
                outcome = "closed at once"
            except DrillApiError as err:
                outcome = ("closed at once" if err.type == "not_durable"  # (committed)
                           else "ended meanwhile, elsewhere (`killgate drill history`)"
                           if err.type == "unknown_drill" else err)
        if isinstance(outcome, str):
            why = f"drill {ident} opened, and was {outcome}: {why}"
        else:
            why = (f"drill {ident} opened, and could not be closed ({outcome}): run `killgate "
                   f"--admin {self.api.base} drill restore {ident}`; {why}")
        self.say(f"stopping: {why}")
        return why

    def _refused(self, started: str, why: str, verdict_: str = "aborted") -> dict[str, Any]:
        self.report = drilloutcome.refused(self.plan, started, why, verdict_)
        return self.report

    async def _finish(self, started: str, to: str | None, fleet: dict[str, Any],
                      restore: dict[str, Any], receipts: dict[str, Any],
                      watch: ErrorWatch, held: Behind | None = None) -> dict[str, Any]:
        plan = self.plan
        self.marks.end = self.now()
        measured = with_builds(analyse(plan, to, self.obs, self.marks), fleet)
        found: Behind | None = None
        if isinstance(gen := restore.get("generation"), int) and "applied" in restore:
            found = await behind(self.api, self.started_with, self.admin_of, gen, self.drill,
                                 self.readyz_keys, catch_up_for(self.poll),
                                 data_of=fleet["data_of"], poll=self.poll)
            for line in found.lines(gen):
                self.say(line)
        short = short_receipt(self.started_with, restore.get("applied"), self.not_back,
                              found.late if found else (), found.unverified if found else (),
                              found.applied if found else ())
        if short is not None:  # (after the check: not when it confirmed every instance)
            self.say(f"WARNING: {short['message']}")
        self.report, summary = drilloutcome.ran(
            plan, self.drill, started, to, measured, self.marks, self.t0_unix, self.stopped,
            restore, receipts, watch, short, found, held, self.injected)
        verdict_ = self.report["verdict"]
        if "elsewhere" in restore:
            return self.report  # (ended already: its end is recorded)
        try:
            await self.reach.call("POST", f"/v1/drills/{self.drill}/end",
                                  {"verdict": verdict_, "summary": summary,
                                   "reason": plan.reason},
                                  # (after a restore on no replica for 30 s, the end's own
                                  # not_durable is not waited out as long: it is recorded)
                                  retry_for=5.0 if restore.get("not_durable") else 30.0)
        except DrillApiError as exc:
            if exc.type == "not_durable":  # (recorded: committed and in force)
                self.say(f"the drill's end is recorded, but no redis replica has confirmed it "
                         f"yet: bring a replica back to the primary ({exc})")
                return self.report
            self.say(f"could not record the drill's end: {exc}; run: killgate --admin "
                     f"{self.reach.api.base} drill restore "
                     f"{self.drill}")
        return self.report


def _seconds(raw: Any, default: float) -> float:
    """A duration of the running config as /v1/config shows it (seconds), else `default`."""
    ok = isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0
    return float(raw) if ok else default
