"""`POST /v1/state/vouch`: an operator says this instance's signing key is the fleet's.

An instance that seeded a flushed store from a snapshot it could not verify (its kills
only), or restarted on a snapshot that says so (`unverified_origin`), stays "not known to be
the fleet's" until another instance re-seeds over its document; a lone instance, or one
`--workers` group, never sees one. This clears it, audited (`state.vouch`, the caller its
actor): scope `killgate:admin`, a `reason`, the Idempotency-Key as every write. The write is
the state side's (state/vouchwrite.py): 409 `nothing_to_vouch` when there is no mark, 503
`state_store_unavailable` when the store holds a document this instance cannot verify
(nothing written: its key is then not the fleet's).
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin import inputs
from gateway.admin.callers import Callers
from gateway.admin.expect import expect_handler
from gateway.admin.ports import Voucher
from gateway.admin.tracing import TRACE_ID
from gateway.admin.writes import Done, Writer
from gateway.domain.audit import AuditDraft

__all__ = ["VouchApi"]

SCOPE = "killgate:admin"
ACTION = "state.vouch"  # (state/vouchwrite.py's VOUCH_ACTION)


class VouchApi:
    def __init__(self, callers: Callers, writer: Writer, voucher: Voucher,
                 instance: str) -> None:
        self.callers = callers
        self.writer = writer
        self.voucher = voucher
        self.instance = instance

    def register(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/state/vouch", self.vouch, expect_handler=expect_handler)

    async def vouch(self, request: web.Request) -> web.Response:
        principal = await self.callers.authorize(request, SCOPE)
        body = await inputs.json_body(request, frozenset({"reason"}))
        reason = inputs.reason(body, required=True)
        rid, peer = self.callers.meta(request)
        trace = request.get(TRACE_ID, "")
        draft = AuditDraft(principal.subject, ACTION, {"instance": self.instance}, reason,
                           request_id=rid, source=peer, trace_id=trace)

        async def op() -> Done:
            answer, doc, ev = await self.voucher.vouch(draft)
            return Done(answer, doc.generation, event=ev)

        return await self.writer.run(request, principal.subject, 0.0, op, rid, peer, trace)
