"""`POST /v1/audit/trim`: audit retention's trim asked for by hand (after a retention
change, or to cut a huge trail), without waiting for `state.audit_retention.interval`.

Owns the endpoint's inputs and answers: scope `killgate:admin`, a `reason` (every write
has one), the Idempotency-Key as every write (admin/writes.py), `?dry_run=true` (how many
events the first trim would remove; changes nothing, needs no body). The trim itself, its
signed `audit.trim` checkpoint (the caller its actor) and its refusals are the state
side's (state/retention.py `trim_now`): 409 `retention_off`, `trim_running`,
`trail_broken` (a trim never hides a break).
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin import inputs
from gateway.admin.callers import Callers
from gateway.admin.expect import expect_handler
from gateway.admin.ports import AuditTrimmer
from gateway.admin.tracing import TRACE_ID
from gateway.admin.writes import Done, Writer
from gateway.domain.audit import AuditDraft
from gateway.domain.auditcut import TRIM_ACTION
from gateway.errors import ApiError

__all__ = ["AuditTrimApi"]

SCOPE = "killgate:admin"


class AuditTrimApi:
    def __init__(self, callers: Callers, writer: Writer, trimmer: AuditTrimmer | None) -> None:
        self.callers = callers
        self.writer = writer
        self.trimmer = trimmer  # (None: state.audit_retention is not configured)

    def register(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/audit/trim", self.trim, expect_handler=expect_handler)

    async def trim(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, SCOPE)
        dry = inputs.query_text(request, "dry_run", "true|false", "true or false") == "true"
        if dry and not request.body_exists:
            reason = ""  # (a dry run changes nothing: no reason needed)
        else:
            body = await inputs.json_body(request, frozenset({"reason"}))
            reason = inputs.reason(body, required=not dry)
        trimmer = self.trimmer
        if trimmer is None:
            raise ApiError(409, "retention_off",
                           "audit retention is off (no state.audit_retention in the config): "
                           "there are no bounds to trim the trail to")
        rid, peer = self.callers.meta(request)
        trace = request.get(TRACE_ID, "")
        draft = AuditDraft(principal.subject, TRIM_ACTION, {"trail": "audit"}, reason,
                           request_id=rid, source=peer, trace_id=trace)
        if dry:
            return web.json_response(await trimmer.trim_now(draft, dry_run=True))

        async def op() -> Done:
            return Done(await trimmer.trim_now(draft), None)

        return await self.writer.run(request, principal.subject, 0.0, op, rid, peer, trace)
