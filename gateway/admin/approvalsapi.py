"""The two-person rule's endpoints: GET /v1/approvals, POST /v1/approvals/{id}/approve
and /decline (CONTRACT §5.2; the rule itself is admin/approvals.py).

Owns who may list and act on an open request: the caller, its scope against the stored
record, and the refusals logged and audited (admin/callers.py). A step that applies the
change runs as a write (admin/writes.py: idempotency, the receipt).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from gateway.admin import actions, inputs
from gateway.admin.approvalrecord import ApprovalRefused, principal_key
from gateway.admin.approvals import Approvals
from gateway.admin.auth import Principal
from gateway.admin.callers import Callers
from gateway.admin.expect import expect_handler
from gateway.admin.tracing import TRACE_ID
from gateway.admin.writes import Writer
from gateway.errors import ApiError, Forbidden
from gateway.log import event

__all__ = ["APPROVAL_ID", "ApprovalsApi"]

log = logging.getLogger("killgate.admin")

APPROVAL_ID = r"ap-[0-9a-f]{16}"


class ApprovalsApi:
    def __init__(self, callers: Callers, approvals: Approvals, writer: Writer) -> None:
        self.callers = callers
        self.approvals = approvals
        self.writer = writer

    def register(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/approvals", self.approvals_list, expect_handler=expect_handler)
        r.add_post("/v1/approvals/{id}/approve", self.approve, expect_handler=expect_handler)
        r.add_post("/v1/approvals/{id}/decline", self.decline, expect_handler=expect_handler)

    async def approvals_list(self, request: web.Request) -> web.Response:
        # killgate:read lists every open request; a token without it, the requests it may
        # approve (an unkill for killgate:kill): an approver must see what it approves
        principal = await self.callers.authorize(request, None)
        items = self.approvals.open()
        if not principal.may("killgate:read"):
            if not any(principal.may(s) for s in set(actions.SCOPE_OF.values())):
                await self.callers.authorize(request, "killgate:read")  # (403, audited)
            # (a newer version's action unknown here: the scope implying every scope)
            items = [a for a in items
                     if principal.may(actions.SCOPE_OF.get(a["action"], "killgate:admin"))]
        # whether the caller asked for it or approved it already (the approve step refuses
        # both: 403 self_approval, 409 already_approved), as that step compares principals,
        # so the console offers no approval that would only be refused
        who = principal_key(principal.subject)
        for a in items:
            a["yours"] = principal_key(a["requested_by"]) == who
            a["approved_by_you"] = who in {principal_key(x) for x in a["approved_by"]}
        return web.json_response({"approvals": items})

    def _approval_id(self, request: web.Request) -> str:
        ident = request.match_info["id"]
        if not re.fullmatch(APPROVAL_ID, ident):
            raise ApiError(404, "unknown_approval", "no open approval with that id")
        return ident

    async def approve(self, request: web.Request) -> web.Response:
        # any valid token; the scope needed is the action's, checked against the record
        principal = await self.callers.authorize(request, None)
        ident = self._approval_id(request)
        body = await inputs.json_body(request, frozenset({"hash", "reason"}))
        expected = body.get("hash")
        if expected is not None and (not isinstance(expected, str)
                                     or not re.fullmatch(r"[0-9a-f]{64}", expected)):
            raise ApiError(400, "bad_request", "'hash' must be the 64 hex digits of the "
                           "change's hash (GET /v1/approvals shows it)")
        reason = inputs.reason(body, required=False, default="approved")
        wait = inputs.wait(request)
        rid, peer = self.callers.meta(request)
        trace = request.get(TRACE_ID, "")
        return await self._approval_step(request, principal, peer, wait, rid, lambda: (
            self.approvals.approve(ident, principal, expected, reason, rid, peer, trace)))

    async def decline(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, None)
        ident = self._approval_id(request)
        body = await inputs.json_body(request, frozenset({"reason"}))
        reason = inputs.reason(body, required=False, default="declined")
        wait = inputs.wait(request)
        rid, peer = self.callers.meta(request)
        trace = request.get(TRACE_ID, "")
        return await self._approval_step(request, principal, peer, wait, rid, lambda: (
            self.approvals.decline(ident, principal, reason, rid, peer, trace)))

    async def _approval_step(self, request: web.Request, principal: Principal, peer: str,
                             wait: float, rid: str, op: Any) -> web.Response:
        try:
            # (a replay, too, needs the action's scope: the step stores it with its answer,
            # as the record it was read from is gone once the change is applied)
            return await self.writer.run(request, principal.subject, wait, op, rid, peer,
                                         request.get(TRACE_ID, ""), may=principal.may)
        except Forbidden as exc:  # the action's scope, checked against the stored record
            self.callers.refused(request, peer, None, principal, exc)
            raise
        except (ApiError, ApprovalRefused) as exc:
            if exc.type in ("self_approval", "approval_changed", "approval_tampered"):
                event(log, "approval_refused", logging.WARNING, type=exc.type,
                      actor=principal.subject, approval=request.match_info["id"], peer=peer)
            raise
