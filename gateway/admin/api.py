"""Admin HTTP API (CONTRACT §4) on its own listener, separate from the data plane.

Owns the admin routes and their handlers: who may call what (scopes), reading the
request (admin/inputs.py), and handing writes to admin/writes.py; /metrics is
admin/scrape.py's, an audit page admin/auditread.py's. Who calls is checked by
admin/callers.py (refused calls counted, rate limited per address, and audited through
`DeniedLog`). It is given only the narrow interfaces it uses (admin/ports.py), never the
composition root.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.admin import (
    actions,
    breakglass,
    etag,
    glassjournal,
    inputs,
    localkill,
    openapi,
    shadowgate,
    writenotes,
)
from gateway.admin.approvalexpiry import ApprovalExpiry
from gateway.admin.approvals import Approvals
from gateway.admin.approvalsapi import ApprovalsApi
from gateway.admin.auditread import audit_page
from gateway.admin.auth import Authenticator, Principal
from gateway.admin.callers import Callers
from gateway.admin.denied import DeniedLog
from gateway.admin.middleware import answer_headers, errors, json_error
from gateway.admin.ports import (
    AlertInbox,
    AuditReader,
    Counters,
    Current,
    FleetView,
    Idempotency,
    LocalKiller,
    MetricsPage,
    Readiness,
    ShadowGate,
    StateWriter,
)
from gateway.admin.readyz import ProofBudget, readyz
from gateway.admin.scrape import Scrapes
from gateway.admin.shadowgate import ShadowChecks
from gateway.admin.status import StatusBuilder
from gateway.admin.statusparts import ROUTES_PARAM, StatusParts
from gateway.admin.tracing import TRACE_ID
from gateway.admin.writes import Done, Writer
from gateway.configfile import LoadedConfig
from gateway.domain.audit import AuditDraft, clean_text
from gateway.domain.diff import config_dict
from gateway.domain.statedoc import StateDoc
from gateway.errors import (
    ApiError,
    ConflictingState,
    Forbidden,
    NotDurable,
    StoreOutcomeUnknown,
    StoreUnavailable,
    StoreUnverifiable,
)

__all__ = ["AdminApi", "json_error"]

log = logging.getLogger("killgate.admin")
BREAK_GLASS = "killgate:breakglass"
#: the writes: (method, path, action), each handled by `_action`
WRITES = (("POST", "/v1/kill", "kill"), ("POST", "/v1/unkill", "unkill"),
          ("POST", "/v1/routes/{route}/rollback", "rollback"),
          ("POST", "/v1/routes/{route}/promote", "promote"),
          ("PUT", "/v1/routes/{route}/weights", "weights"),
          ("POST", "/v1/routes/{route}/release", "release"))


class AdminApi:
    def __init__(self, *, instance: str, current: Current, state: StateWriter,
                 fleet: FleetView, audit: AuditReader, idem: Idempotency,
                 status: StatusBuilder, readiness: Readiness, counters: Counters,
                 metrics_page: MetricsPage, alerts: AlertInbox | None = None,
                 shadow: ShadowGate | None = None,
                 proof_key: tuple[str, bytes] | None = None,
                 local: LocalKiller | None = None) -> None:
        self.instance = instance
        self.local = local  # emergency local kills (localkill.py)
        self.proof_key = proof_key  # (key id, state signing key): /readyz's proof to a drill
        #: a `--workers` group's worker: its siblings' (name, generation), told to a drill
        #: with their proofs (set by serving.py; workerstates.py)
        self.siblings: Callable[[], list[tuple[str, int]]] | None = None
        self.proof_budget = ProofBudget()  # (what a flood of questions makes it prove)
        self.current = current
        self.state = state
        self.fleet = fleet
        self.audit_reader = audit
        self.status_parts = StatusParts(status)  # (kept per table and second)
        self.readiness = readiness
        self.counters = counters
        self.scrapes = Scrapes(instance, metrics_page, counters)  # GET /metrics
        self._openapi: tuple[object, bytes] | None = None  # (the config, its document)
        self.alerts = alerts
        self.denied = DeniedLog(self._append_audit, counters)
        self.callers = Callers(current, counters, self.denied)  # who calls, refused calls
        self.writer = Writer(state, idem, self._append_audit)
        #: break-glass writes whose answer was lost, counted once seen in force
        self.unanswered = breakglass.Unanswered(current, counters)
        #: break-glass writes not counted yet, kept beside the snapshot: a process that died
        #: before counting one has it counted by the next start (`reconcile_glass`)
        snap = current.loaded.config.state.snapshot_path
        self.glass_journal = glassjournal.Journal(
            Path(f"{current.loaded.resolve(snap)}.glass") if snap else None)
        self.shadow_checks = ShadowChecks(shadow, current)  # the shadow promotion gate
        self.approvals = Approvals(current, state, self.shadow_checks)
        # (started by startup.py)
        self.approval_expiry = ApprovalExpiry(current, state, counters=counters)

    def reconfigure(self, loaded: LoadedConfig, checked: Authenticator | None = None) -> None:
        """A reloaded config may change the admin auth settings (not the listener)."""
        self.callers.reconfigure(loaded, checked)

    def app(self, outer: tuple[Any, ...] = ()) -> web.Application:
        """`outer`: middlewares that wrap everything (tracing), outermost first."""
        app = web.Application(middlewares=[*outer, errors],
                              client_max_size=self.current.loaded.config.admin.max_body_size)
        app.on_response_prepare.append(answer_headers)
        app[inputs.BODY_TIMEOUT] = self.current.loaded.config.server.body_timeout
        app[inputs.MAX_BODY] = self.current.loaded.config.admin.max_body_size
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.scrapes.handle)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/config", self.config)
        r.add_get("/v1/audit", self.audit)
        for method, path, action in WRITES:
            r.add_route(method, path, functools.partial(self._action, action=action))
        ApprovalsApi(self.callers, self.approvals, self.writer).register(r)
        r.add_post("/v1/alerts/alertmanager", self.alertmanager)
        return app

    async def _append_audit(self, draft: AuditDraft) -> None:
        if await self.state.append_audit(draft) is None:
            raise StoreUnavailable("the state store holds no state yet; not recorded")

    # ------------------------------------------------------------------ open endpoints

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "instance": self.instance})

    async def readyz(self, request: web.Request) -> web.Response:
        return readyz(request, self.instance, self.readiness, self.current, self.fleet,
                      self.proof_key, self.siblings, self.proof_budget)

    async def openapi(self, request: web.Request) -> web.Response:
        # built once per config (frozen, swapped whole on reload): anyone can ask for it,
        # and building it cost ~15 health checks of the loop the data plane runs on
        cfg = self.current.loaded.config
        built = self._openapi
        if built is None or built[0] is not cfg:
            built = self._openapi = (cfg, json.dumps(openapi.document(
                [r.name for r in cfg.routes],
                sorted({v.name for r in cfg.routes for v in r.versions}))).encode())
        return web.Response(body=built[1], content_type="application/json")

    # ------------------------------------------------------------------ reads

    async def status(self, request: web.Request) -> web.Response:
        await self.callers.authorize(request, "killgate:read")
        fields = inputs.query_text(request, "fields", "all|stable|index",
                                   "all, stable or index") or "all"
        only = inputs.query_text(request, "routes", ROUTES_PARAM, "route names separated "
                                 "by commas (each 1-64 of A-Z a-z 0-9 _ . -), at least one")
        # the fleet first: a heartbeat it refuses is counted in the document's
        # verification counts, which would otherwise lag one call behind its instances
        instances = await self.fleet.fleet()
        return etag.respond_body(request, self.status_parts.body(
            fields, instances, None if only is None else self.status_parts.chosen(only)))

    async def config(self, request: web.Request) -> web.Response:
        """The config this instance runs, for `killgate diff`."""
        await self.callers.authorize(request, "killgate:read")
        loaded = self.current.loaded
        return web.json_response({"digest": loaded.digest,
                                  "config": config_dict(loaded.config)})

    async def audit(self, request: web.Request) -> web.Response:
        await self.callers.authorize(request, "killgate:read")
        return await audit_page(request, self.audit_reader)

    # ------------------------------------------------------------------ writes

    async def _action(self, request: web.Request, action: str) -> web.Response:
        principal = await self.callers.authorize(request, actions.SCOPE_OF[action])
        local = localkill.asked(request, action)  # (a local kill if the store cannot commit)
        cfg = self.current.loaded.config
        route = request.match_info.get("route")
        # (a release may name a route the config lacks that an override latches: an orphan)
        latched = self.current.doc.overrides if action == "release" else {}
        if route is not None and cfg.route(route) is None and route not in latched:
            raise ApiError(404, "unknown_route", f"no route named {clean_text(route, 64)!r}")
        glass_field = frozenset() if action == "kill" else frozenset({"break_glass"})
        body = await inputs.json_body(request, actions.ACTIONS[action] | {"reason"} | glass_field)
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
            return await self.writer.run(request, principal.subject, wait,
                                         lambda: self.approvals.request(intent, needs), rid, peer,
                                         intent.trace_id)

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
        try:
            return await self.writer.run(request, principal.subject, wait, op, rid, peer,
                                         intent.trace_id)
        except StoreUnavailable as exc:
            if isinstance(exc, (StoreOutcomeUnknown, StoreUnverifiable)):
                raise  # (may be in force; or the store answers: no outage)
            if not local:
                raise ApiError(503, "state_store_unavailable", "the state store cannot be "
                               f"reached, nothing was changed ({exc}){localkill.HINT}") from exc
            return await localkill.take(self.local, self.current, intent.target, intent.args,
                                        principal.subject, reason, str(exc), self.instance)

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

    # ------------------------------------------------------------------ alerts

    async def alertmanager(self, request: web.Request) -> web.Response:
        """Alertmanager's webhook (control/alerts.py does the work)."""
        try:
            principal = await self.callers.authorize(request, "killgate:alert")
        except ApiError:
            # Alertmanager's token expired, or lacks the scope: no alert acts until that is
            # fixed, and Alertmanager's log is the only other place that says so (the
            # shipped KillgateAlertsRefused watches this count)
            self.counters.inc("killgate_alertmanager_alerts_total", ("denied",),
                              label_names=("outcome",))
            raise
        if self.alerts is None:
            raise ApiError(404, "not_found", "alerts are not configured")
        try:
            body = await inputs.json_body(request, None)
        except (ApiError, web.HTTPRequestEntityTooLarge) as exc:  # refused unread, as above
            self.counters.inc("killgate_alertmanager_alerts_total", (
                "too_large" if isinstance(exc, web.HTTPRequestEntityTooLarge) else "malformed",),
                label_names=("outcome",))
            raise
        rid, peer = self.callers.meta(request)
        return web.json_response(await self.alerts.receive(
            body, rid, peer, request.get(TRACE_ID, ""), principal.subject))
