"""The state writes' endpoints (CONTRACT §4): kill, unkill, rollback, promote, weights,
release.

Owns one write asked over the API, from its request to its answer: the caller's scope,
the request read (admin/inputs.py) into an intent (admin/actions.py), the two-person rule
(a request for approval: admin/approvals.py) or break-glass past it (its own scope, its use
journaled and counted: admin/breakglass.py, admin/glassjournal.py), the shadow promotion
gate, the write run with idempotency and its receipt (admin/writes.py), and an emergency
local kill when the store cannot commit (admin/localkill.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.admin import (
    actions,
    breakglass,
    glassjournal,
    inputs,
    localkill,
    shadowgate,
    writenotes,
)
from gateway.admin.approvals import Approvals
from gateway.admin.auth import Principal
from gateway.admin.callers import Callers
from gateway.admin.expect import expect_handler
from gateway.admin.ports import AuditReader, Counters, Current, LocalKiller, StateWriter
from gateway.admin.shadowgate import ShadowChecks
from gateway.admin.tracing import TRACE_ID
from gateway.admin.writes import Done, Writer
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import (
    ApiError,
    ConflictingState,
    DomainError,
    Forbidden,
    NotDurable,
    StoreBusy,
    StoreOutcomeUnknown,
    StoreRefusesWrites,
    StoreUnavailable,
    StoreUnverifiable,
)
from gateway.errors_cut import CutAfterCommit

__all__ = ["BREAK_GLASS", "WRITES", "ActionsApi"]

BREAK_GLASS = "killgate:breakglass"
#: the writes: (method, path, action), each handled by `_action`
WRITES = (("POST", "/v1/kill", "kill"), ("POST", "/v1/unkill", "unkill"),
          ("POST", "/v1/routes/{route}/rollback", "rollback"),
          ("POST", "/v1/routes/{route}/promote", "promote"),
          ("PUT", "/v1/routes/{route}/weights", "weights"),
          ("POST", "/v1/routes/{route}/release", "release"))


#: action -> the body fields it takes: its own, `reason`, and but for a kill (never gated:
#: nothing to break), `break_glass`
_FIELDS = {action: fields | {"reason"} | (frozenset() if action == "kill"
                                          else frozenset({"break_glass"}))
           for action, fields in actions.ACTIONS.items()}


class ActionsApi:
    def __init__(self, *, instance: str, current: Current, state: StateWriter,
                 callers: Callers, writer: Writer, approvals: Approvals,
                 shadow_checks: ShadowChecks, counters: Counters, audit: AuditReader,
                 append_audit: Callable[[AuditDraft], Awaitable[None]],
                 local: LocalKiller | None) -> None:
        self.instance = instance
        self.current = current
        self.state = state
        self.callers = callers
        self.writer = writer
        self.approvals = approvals
        self.shadow_checks = shadow_checks
        self.counters = counters
        self.audit_reader = audit
        self._append_audit = append_audit
        self.local = local  # emergency local kills (localkill.py)
        #: break-glass writes whose answer was lost, counted once seen in force
        self.unanswered = breakglass.Unanswered(current, counters)
        #: break-glass writes not counted yet, kept beside the snapshot: a process that died
        #: before counting one has it counted by the next start (`reconcile_glass`)
        snap = current.loaded.config.state.snapshot_path
        self.glass_journal = glassjournal.Journal(
            Path(f"{current.loaded.resolve(snap)}.glass") if snap else None)

    def register(self, r: web.UrlDispatcher) -> None:
        for method, path, action in WRITES:
            r.add_route(method, path, functools.partial(self._action, action=action),
                        expect_handler=expect_handler)

    async def _action(self, request: web.Request, action: str) -> web.Response:
        principal = await self.callers.authorize(request, actions.SCOPE_OF[action])
        try:
            return await self._act(request, action, principal)
        except (ApiError, DomainError) as exc:
            # (a name's refusal lists the names there are only to a reader)
            bare = getattr(exc, "bare", None)
            if bare is not None and not principal.may("killgate:read"):
                exc.message = bare  # (its status and type as they were)
            raise

    async def _act(self, request: web.Request, action: str, principal: Principal
                   ) -> web.Response:
        local = localkill.asked(request, action)  # (a local kill if the store cannot commit)
        cfg = self.current.loaded.config
        route = request.match_info.get("route")
        # (a release may name a route the config lacks that an override latches: an orphan)
        latched = self.current.doc.overrides if action == "release" else {}
        if route is not None and cfg.route(route) is None and route not in latched:
            raise writenotes.unknown_route(cfg, route)
        body = await inputs.json_body(request, _FIELDS[action])
        reason = inputs.reason(body)
        wait = inputs.wait(request)
        rid, peer = self.callers.meta(request)
        # (the trace id given, not set by dataclasses.replace after: 30k instructions a
        # write before its commit leaves, callgrind; the Intent is the same)
        intent = actions.intent(action, body, route, cfg, principal.subject, reason, rid, peer,
                                self.current.doc.kills, latched, request.get(TRACE_ID, ""))
        glass = body.get("break_glass", False)
        if not isinstance(glass, bool):
            raise ApiError(400, "bad_request", "'break_glass' must be true or false")
        gate = actions.gate_of(intent)
        needs = cfg.approvals.needs(gate) if gate is not None else 1
        if glass:
            self._may_break_glass(request, peer, principal)
            intent = intent.with_audit(break_glass=True)
        elif needs > 1:
            try:
                return await self.writer.run(request, principal.subject, wait,
                                             lambda: self.approvals.request(intent, needs), rid,
                                             peer, intent.trace_id)
            except StoreUnavailable as exc:
                if (said := self._outage(action, intent.target, exc)) is None:
                    raise
                raise said from exc

        def answer(plan: actions.Plan, new: StateDoc, ev: dict[str, Any] | None) -> Done:
            # what the answer says beside its receipt; `changed` false: it was already so
            body = {**plan.answer, "changed": ev is not None,
                    **writenotes.notes(intent, new, self.current.loaded.config)}
            if ev is not None:
                body["audit_id"] = ev["id"]
            if glass:
                body["break_glass"] = True
            if action == "unkill" and (note := localkill.held(self.local, intent.target)):
                body["still_killed_locally"] = note  # (lifted in the store, not here)
            return Done(body, new.generation, event=ev)

        async def op() -> Done:
            mine, kept = intent, None
            if glass:  # (its event's id kept until counted: glassjournal.py)
                eid, kept = await asyncio.to_thread(  # (an fsync: off the loop)
                    self.glass_journal.begin, breakglass.use(intent, needs, peer))
                mine = intent.with_audit(id=eid)
            plan = actions.plan(mine, self.current.loaded.config)
            try:
                change = await self.shadow_checks.wrap(shadowgate.route_of(intent), plan.change)
                new, ev = await self.state.write(change, plan.describe)
            except StoreOutcomeUnknown as exc:
                if exc.doc is not None and exc.event is not None:
                    exc.done = answer(plan, exc.doc, exc.event)  # (should it have landed)
                    if glass and exc.doc.writes:
                        # (counted once the state in force names it, retried or not)
                        self.unanswered.watch(exc.doc.writes[-1], exc.doc.generation, intent,
                                              needs, peer, exc.event.get("id"), kept)
                raise
            except CutAfterCommit as exc:  # (the stop, as it waited: its key keeps it)
                if exc.event is not None:
                    exc.done = answer(plan, exc.doc, exc.event)
                raise
            except NotDurable as exc:
                if exc.event is not None:
                    # committed and in force, only not on a replica yet (its retry is
                    # answered with it, once confirmed): it skipped the rule
                    exc.done = answer(plan, exc.doc, exc.event)
                    if glass:
                        breakglass.used(self.counters, intent, needs, peer)
                        glassjournal.Journal.done(kept)
                raise
            except Exception:
                glassjournal.Journal.done(kept)  # (refused: nothing applied)
                raise
            if ev is not None and glass:
                glassjournal.test_stop_before_count()
                # (counted once it skipped the rule: not a refusal, nor a replay)
                breakglass.used(self.counters, intent, needs, peer)
            glassjournal.Journal.done(kept)
            return answer(plan, new, ev)

        if action != "kill":
            try:
                return await self.writer.run(request, principal.subject, wait, op, rid, peer,
                                             intent.trace_id)
            except ConflictingState as exc:
                note = localkill.held(self.local, intent.target)
                if exc.type != "not_killed" or note is None:
                    raise
                raise localkill.not_killed(exc, note) from exc
            except StoreUnavailable as exc:
                if (said := self._outage(action, intent.target, exc)) is None:
                    raise
                raise said from exc
        try:
            return await self.writer.run(request, principal.subject, wait, op, rid, peer,
                                         intent.trace_id)
        except StoreUnavailable as exc:
            if isinstance(exc, (StoreOutcomeUnknown, StoreUnverifiable)):
                raise  # (may be in force; or the store answers: no outage)
            if not local and isinstance(exc, StoreBusy):  # (it answers: no outage)
                hint = "" if isinstance(exc, StoreRefusesWrites) else localkill.HINT  # (said)
                raise ApiError(503, exc.type, f"{exc}{hint}",
                               {"Retry-After": str(exc.retry_after)}) from exc
            if not local:
                raise ApiError(503, "state_store_unavailable", "the state store cannot be "
                               f"reached, nothing was changed ({exc}){localkill.HINT}") from exc
            return await localkill.take(self.local, self.current, intent.target, intent.args,
                                        principal.subject, reason, str(exc), self.instance,
                                        self.state.confirmed())

    def _outage(self, action: str, target: dict[str, Any],
                exc: StoreUnavailable) -> ApiError | None:
        """For an unkill the store cannot take of what a local kill stops here, the 503 that
        says so and how it ends; None: the store's error as it was."""
        if action != "unkill" or isinstance(exc, (StoreOutcomeUnknown, StoreUnverifiable,
                                                  StoreBusy)):
            return None
        # (the journal this process keeps: the file reloaded last may name another
        # snapshot_path, which applies at the next start)
        return localkill.unkill_unreachable(
            self.local, target, str(exc),
            self.local.journal_file() if self.local is not None else None)

    async def reconcile_glass(self) -> None:
        """At the start: the break-glass uses a process that ended before counting them
        left, counted when the trail holds their events (glassjournal.py)."""
        await self.glass_journal.reconcile(
            self.audit_reader, lambda glass, learned: breakglass.count(self.counters, glass,
                                                                       learned),
            self._append_audit)

    def _may_break_glass(self, request: web.Request, peer: str, principal: Principal) -> None:
        """Skipping the two-person rule needs its own scope (killgate:admin does not imply
        it)."""
        try:
            principal.require(BREAK_GLASS)
        except Forbidden as exc:
            exc.message += " that 'break_glass' needs (killgate:admin does not imply it)"
            self.callers.refused(request, peer, BREAK_GLASS, principal, exc)
            raise
