"""Admin HTTP API (CONTRACT §4) on its own listener, separate from the data plane.

Owns the admin routes and their read handlers: who may call what (scopes), reading the
request (admin/inputs.py); the state writes' endpoints are admin/actionsapi.py's; /metrics is
admin/scrape.py's, an audit page admin/auditread.py's. Who calls is checked by
admin/callers.py (refused calls counted, rate limited per address, and audited through
`DeniedLog`). It is given only the narrow interfaces it uses (admin/ports.py), never the
composition root.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin import etag, inputs, openapi
from gateway.admin.actionsapi import ActionsApi
from gateway.admin.approvalexpiry import ApprovalExpiry
from gateway.admin.approvals import Approvals
from gateway.admin.approvalsapi import ApprovalsApi
from gateway.admin.auditread import audit_page
from gateway.admin.auth import Authenticator
from gateway.admin.callers import Callers
from gateway.admin.denied import DeniedLog
from gateway.admin.expect import EXPECT_GATE, expect_handler
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
from gateway.admin.writes import Writer
from gateway.configfile import LoadedConfig
from gateway.domain.audit import AuditDraft
from gateway.domain.diff import config_dict
from gateway.errors import ApiError, StoreUnavailable

__all__ = ["AdminApi", "json_error"]

log = logging.getLogger("killgate.admin")


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
        self.shadow_checks = ShadowChecks(shadow, current)  # the shadow promotion gate
        self.approvals = Approvals(current, state, self.shadow_checks)
        #: the state writes' endpoints (kill, unkill, ...: actionsapi.py)
        self.actions = ActionsApi(
            instance=instance, current=current, state=state, callers=self.callers,
            writer=self.writer, approvals=self.approvals, shadow_checks=self.shadow_checks,
            counters=counters, audit=audit, append_audit=self._append_audit, local=local)
        #: break-glass writes whose answer was lost (stopped by startup.py)
        self.unanswered = self.actions.unanswered
        # (started by startup.py)
        self.approval_expiry = ApprovalExpiry(current, state, counters=counters)

    def reconfigure(self, loaded: LoadedConfig, checked: Authenticator | None = None) -> None:
        """A reloaded config may change the admin auth settings (not the listener)."""
        self.callers.reconfigure(loaded, checked)

    def app(self, outer: tuple[Any, ...] = (), front: Any = None) -> web.Application:
        """`outer`: middlewares that wrap everything (tracing), outermost first; `front`:
        instead, the listener's one middleware (admin/front.py), which answers errors
        itself."""
        app = web.Application(middlewares=[front] if front is not None else [*outer, errors],
                              client_max_size=self.current.loaded.config.admin.max_body_size)
        app.on_response_prepare.append(answer_headers)
        if (gate := getattr(front, "expect", None)) is not None:
            app[EXPECT_GATE] = gate  # (every route's expect handler asks it: expect.py)
        app[inputs.BODY_TIMEOUT] = self.current.loaded.config.server.body_timeout
        app[inputs.MAX_BODY] = self.current.loaded.config.admin.max_body_size
        r = app.router
        r.add_get("/healthz", self.healthz, expect_handler=expect_handler)
        r.add_get("/readyz", self.readyz, expect_handler=expect_handler)
        r.add_get("/metrics", self.scrapes.handle, expect_handler=expect_handler)
        r.add_get("/openapi.json", self.openapi, expect_handler=expect_handler)
        r.add_get("/v1/status", self.status, expect_handler=expect_handler)
        r.add_get("/v1/config", self.config, expect_handler=expect_handler)
        r.add_get("/v1/audit", self.audit, expect_handler=expect_handler)
        self.actions.register(r)
        ApprovalsApi(self.callers, self.approvals, self.writer).register(r)
        r.add_post("/v1/alerts/alertmanager", self.alertmanager, expect_handler=expect_handler)
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

    async def reconcile_glass(self) -> None:
        """At the start: the break-glass uses a process that ended before counting them
        left, counted (actionsapi.py)."""
        await self.actions.reconcile_glass()

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
