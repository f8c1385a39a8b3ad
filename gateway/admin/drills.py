"""The admin API's drill endpoints (CONTRACT §5.4): open, inject, restore, end, list.

Owns request validation and scopes of `/v1/drills*`; transitions live in `domain/drills.py`,
what an open asks for in `drillopen`, what an injection changes and needs in `drillinject`,
the drill key, gauges and audit scans in `drillsupport`. Scope `killgate:drill` acts on
drill routes (`drill_for`); a production route needs `"production": true` at open. Writes
go through the admin API's writer; given only the ports it uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin import inputs
from gateway.admin.auth import Principal
from gateway.admin.drillinject import FIELDS, injection
from gateway.admin.drillopen import open_input
from gateway.admin.drillstarted import live_addresses, started_with
from gateway.admin.drillsupport import DrillHistory, drill_events, end_input
from gateway.admin.expect import expect_handler
from gateway.admin.ports import AuditReader, Current, Describe, FleetView, StateWriter
from gateway.admin.ports import Change as ChangeFn
from gateway.admin.tracing import TRACE_ID
from gateway.admin.writedone import answered_if_landed
from gateway.admin.writes import Done
from gateway.config import RouteConfig
from gateway.domain import drills
from gateway.domain.audit import AuditDraft, clean_text, utc_now
from gateway.domain.drillfinish import Finished, end_event, finish
from gateway.domain.drilltoken import Claims, mint
from gateway.domain.readyzproof import drill_keys
from gateway.domain.statedoc import Change, StateDoc, plain
from gateway.errors import ApiError, NotDurable
from gateway.log import event

if TYPE_CHECKING:
    from gateway.admin.callers import Callers
    from gateway.admin.shadowgate import ShadowChecks
    from gateway.admin.writes import Writer

__all__ = ["DrillApi"]

#: the header a replayed answer carries (admin/replay.py)
REPLAYED = "idempotent-replayed"

log = logging.getLogger("killgate.drills")
MADE = ("kill", "rollback", "drill.fault")  # the audit actions of a drill's changes


class DrillApi:
    def __init__(self, callers: Callers, writer: Writer, shadow_checks: ShadowChecks, *,
                 current: Current, state: StateWriter, audit: AuditReader, key: bytes | None,
                 key_problem: str | None, proof_keys: Mapping[str, bytes] | None = None,
                 fleet: FleetView | None = None) -> None:
        self.callers = callers  # who calls
        self.writer = writer  # idempotency, receipt
        self.shadow_checks = shadow_checks
        self.current = current
        self.state = state
        self.audit = audit
        self.key = key
        self.key_problem = key_problem
        self.proof_keys = proof_keys or {}  # (the state signing keys by id: readyz_keys)
        self.fleet = fleet  # (the instances a drill opens with: admin/drillstarted.py)
        self.history = DrillHistory()  # (not read again from a trail that has not changed)

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/drills", self.list, expect_handler=expect_handler)
        r.add_post("/v1/drills", self.open, expect_handler=expect_handler)
        r.add_post("/v1/drills/{drill}/inject", self.inject, expect_handler=expect_handler)
        r.add_post("/v1/drills/{drill}/restore", self.restore, expect_handler=expect_handler)
        r.add_post("/v1/drills/{drill}/end", self.end, expect_handler=expect_handler)

    # ------------------------------------------------------------------ helpers

    def _cfg_route(self, name: Any) -> RouteConfig:
        if not isinstance(name, str) or not name:
            raise ApiError(400, "bad_request", "'route' is required")
        rc = self.current.loaded.config.route(name)
        if rc is None:
            raise ApiError(404, "unknown_route", f"no route named {clean_text(name, 64)!r}")
        return rc

    def _drill_id(self, request: web.Request) -> str:
        drill = request.match_info["drill"]
        if not 1 <= len(drill) <= 64 or not drill.replace("-", "").isalnum() \
                or not drill.isascii():
            raise ApiError(404, "unknown_drill", "no such drill")
        return drill

    async def _write(self, request: web.Request, principal: Principal, change: ChangeFn,
                     describe: Describe, extra: dict[str, Any],
                     meta: tuple[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Apply a change with its audit event (carrying the call's trace id) through the
        admin writer; the answer: the receipt, `changed`, `audit_id` and `extra`, and the
        headers to answer with (a replay's `idempotent-replayed`)."""
        wait = inputs.wait(request)
        rid, peer = meta
        trace = request.get(TRACE_ID, "")

        def traced(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return dataclasses.replace(describe(cur, new), trace_id=trace)

        def answer(new: StateDoc, ev: dict[str, Any] | None) -> Done:
            body = {**extra, "changed": ev is not None}
            if ev is not None:
                body["audit_id"] = ev["id"]
            return Done(body, new.generation, event=ev)

        async def op() -> Done:
            # (committed but not yet on a replica, 503 not_durable, or its answer lost: the
            # key keeps this answer for the retry; let go, the retry ran the step again: an
            # end's answered 404 unknown_drill, an open's 409, tests/test_drill_not_durable.py)
            with answered_if_landed(answer):
                new, ev = await self.state.write(change, traced)
            return answer(new, ev)

        resp = await self.writer.run(request, principal.subject, wait, op, rid, peer, trace)
        replayed = {k: v for k, v in resp.headers.items() if k.lower() == REPLAYED}
        return dict(json.loads(resp.text or "{}")), replayed

    # ------------------------------------------------------------------ reads

    async def list(self, request: web.Request) -> web.Response:
        await self.callers.authorize(request, "killgate:read")
        limit = inputs.query_int(request, "limit", 20, 1, 200)
        doc = self.current.doc
        opened = [{k: v for k, v in plain(r).items() if k not in ("fault", "nonce")} | {
            "injected": list(r.injected), "fault": None if r.fault is None else {
                "version": r.fault["version"], "expires": r.fault["expires"]},
            "overdue": time.time() > r.deadline} for r in doc.drills.values()]
        history = await self.history.get(self.audit, limit)
        return web.json_response({"open": opened, "history": history[:limit],
                                  "last": doc.drill_results})

    # ------------------------------------------------------------------ writes

    async def open(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, "killgate:drill")
        body = await inputs.json_body(request, frozenset(
            {"kind", "route", "version", "production", "duration", "reason"}))
        rc = self._cfg_route(body.get("route"))
        kind, version, duration = open_input(body, rc,
                                             self.current.loaded.config.drills.max_duration)
        reason = inputs.reason(body)
        rid, peer = self.callers.meta(request)
        drill = f"d-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        deadline = time.time() + duration
        extra: dict[str, Any] = {"drill": drill}
        nonce = ""
        if kind == "failover":
            if version is None:
                raise ApiError(400, "bad_request", "a failover drill needs 'version'")
            if self.key is None:
                raise ApiError(409, "no_drill_key", str(self.key_problem))
            if rc.version(version) is None:
                raise ApiError(404, "unknown_version",
                               f"route {rc.name!r} has no version {version!r}")
            # the drill's requests carry this token from the start: the fault, once
            # injected, meets them (and only them) from the moment each instance applies it
            nonce = secrets.token_urlsafe(12)
            extra["token"] = mint(self.key, Claims(drill, rc.name, version, nonce, deadline))

        instances = await live_addresses(self.fleet)

        def change(cur: StateDoc) -> Change:
            return drills.open_drill(cur, rc, drill, kind, version, principal.subject,
                                     utc_now(), deadline, nonce)

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            rec = new.drills[drill]
            return AuditDraft(principal.subject, "drill.start",
                              {"drill": drill, "kind": kind, "route": rc.name,
                               "version": version}, reason, rec.before,
                              {"deadline": deadline, "production": rc.drill_for is None,
                               "instances": instances},
                              rid, peer, {"drill": drill})

        try:
            out, headers = await self._write(request, principal, change, describe, extra,
                                             (rid, peer))
        except NotDurable as exc:
            # (open, in force: the 503 names the drill (the first try's, to a replay), for
            # the caller to close it, and no other on the route)
            if isinstance(exc.done, Done) and isinstance(d := exc.done.body.get("drill"), str):
                exc.names["drill"] = d
            raise
        # (a replay's drill is the first try's, not this request's new id)
        rec = self.current.doc.drills.get(str(out.get("drill", drill)))
        out["before"] = rec.before if rec is not None else None
        if isinstance(opened := out.get("drill"), str) and self.proof_keys:
            # (derived again for each answer, a replayed one too: never stored)
            out["readyz_keys"] = drill_keys(self.proof_keys, opened)
        return web.json_response(out, headers=headers)

    async def inject(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, "killgate:drill")
        drill = self._drill_id(request)
        rec = self.current.doc.drills.get(drill)
        if rec is None:
            raise ApiError(404, "unknown_drill", f"no open drill {drill!r}")
        body = await inputs.json_body(request, frozenset({"reason", FIELDS[rec.kind]}))
        rc = self._cfg_route(rec.route)
        meta = self.callers.meta(request)
        inj = injection(rec, rc, body, principal, inputs.reason(body), meta,
                        self.current.loaded.config)
        # (a rollback that would give a shadow traffic below its gate is refused, as ever)
        gated = await self.shadow_checks.wrap(inj.gated_route, inj.change)
        out, headers = await self._write(request, principal, gated, inj.describe,
                                         {"drill": drill}, meta)
        return web.json_response(out, headers=headers)

    async def restore(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, "killgate:drill")
        drill = self._drill_id(request)
        body = await inputs.json_body(request, frozenset({"reason"}))
        reason = inputs.reason(body)
        rid, peer = self.callers.meta(request)
        notes: list[dict[str, Any]] = []
        routes = {r.name: r for r in self.current.loaded.config.routes}
        rebuilt = None
        if drill not in self.current.doc.drills:
            # no record in the state (restored from an old backup, say): the audit trail has
            # every change the drill made, with its id
            events = await drill_events(self.audit, lambda e: e.get("drill") == drill, 50)
            rebuilt = drills.record_from_audit(drill, events)
            if rebuilt is None:
                ended = next((e for e in events if e.get("action") == "drill.end"), None)
                raise ApiError(404, "unknown_drill",
                               f"drill {drill} ended at {ended['time']}: nothing to restore"
                               if ended else f"no open drill {drill!r}")

        def change(cur: StateDoc) -> Change:
            rec = cur.drills.get(drill)
            if rec is not None and rec.restored:
                return Change()  # restored already: nothing to do, nothing recorded
            if rec is None and rebuilt is not None:
                cur = cur.with_changes(drills={**cur.drills, drill: rebuilt})
            ch, got = drills.restore(cur, drill, routes, principal.subject, utc_now())
            notes[:] = got
            return ch

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            rec = new.drills[drill]
            rc = routes.get(rec.route)
            return AuditDraft(principal.subject, "drill.restore",
                              {"drill": drill, "route": rec.route}, reason, rec.before,
                              {"undone": notes, "state": drills.route_state(new, rc, drill)
                               if rc else None, "from": "audit trail" if cur.drills.get(
                                  drill) is None else "state"}, rid, peer, {"drill": drill})

        # (`notes` is filled in place by the change: in the answer an Idempotency-Key
        # replays, not only in the first)
        out, headers = await self._write(request, principal, change, describe,
                                         {"drill": drill, "undone": notes}, (rid, peer))
        out.update(self._state_of(drill))
        # (`killgate drill restore` asks the instances, as a drill's end)
        out["started_with"] = await started_with(self.audit, drill)
        if self.proof_keys:
            out["readyz_keys"] = drill_keys(self.proof_keys, drill)
        return web.json_response(out, headers=headers)

    def _state_of(self, drill: str) -> dict[str, Any]:
        doc = self.current.doc
        rec = doc.drills.get(drill)
        if rec is None:
            return {}
        rc = self.current.loaded.config.route(rec.route)
        return {"before": rec.before,
                "state": drills.route_state(doc, rc, drill) if rc is not None else None}

    async def end(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, "killgate:drill")
        drill = self._drill_id(request)
        body = await inputs.json_body(request, frozenset({"verdict", "summary", "reason"}))
        verdict, summary = end_input(body)
        reason = inputs.reason(body)
        rid, peer = self.callers.meta(request)
        routes = {r.name: r for r in self.current.loaded.config.routes}
        done = Finished()
        undone: list[dict[str, Any]] = []  # (in the answer a replay gives too)
        in_trail = False
        rec = self.current.doc.drills.get(drill)
        if verdict == "passed" and rec is not None and rec.made == 0:
            # (a record an older version wrote or restored counts nothing: its changes are
            # in the audit trail, with its id)
            in_trail = bool(await drill_events(self.audit, lambda e: e.get("drill") == drill
                                               and e.get("action") in MADE, 1))

        def change(cur: StateDoc) -> Change:
            ch = finish(cur, drill, routes, principal.subject, verdict, summary, done,
                        in_trail)
            undone[:] = done.notes
            return ch

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return end_event(drill, done, principal.subject, reason, verdict, summary,
                             rid, peer)

        out, headers = await self._write(request, principal, change, describe,
                                         {"drill": drill, "undone": undone}, (rid, peer))
        event(log, "drill_end", drill=drill, verdict=verdict, actor=principal.subject)
        return web.json_response(out, headers=headers)
