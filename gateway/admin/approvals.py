"""Two-person approvals (CONTRACT §5.2; RELIABILITY rows 46-47): request, approve,
decline.

Owns an approval's life (the record itself, and an open one read back: approvalrecord.py).
A gated write is stored, whole, as an open request in the replicated state document (so
every instance sees it, and it is as tamper-evident as the state itself); each step is one
state change with its audit event (`approval.request`, `approval.approve`,
`approval.decline`, `approval.expire`).
The record is bound to the SHA-256 of its change: an approver may name the hash they
reviewed, and a stored change that no longer matches its hash is refused. The last
approval applies the stored change exactly as a direct write would (admin/actions.py),
in the same state change that closes the request; its audit event names everyone who
approved. A requester never approves their own request; any decline drops it; a kill is
never gated. Expired requests are dropped by approvalexpiry.py.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

from gateway.admin import actions, shadowgate, writenotes
from gateway.admin.actions import Intent
from gateway.admin.approvalrecord import (
    Approval,
    ApprovalRefused,
    UnknownAction,
    all_open,
    newer_scope_note,
    open_request,
    principal_key,
)
from gateway.admin.auth import Principal
from gateway.admin.ports import Current, StateWriter
from gateway.admin.scopedkeys import SCOPED_ACTOR
from gateway.admin.writedone import Done, answered_if_landed
from gateway.config import Config
from gateway.domain.audit import AuditDraft
from gateway.domain.overrides import effective_stable
from gateway.domain.rolledoff import previous_stable
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import Forbidden

__all__ = ["Approvals"]

#: open requests at once, per requester and in all: each is kept in the replicated state
#: document, which every write (a kill too) signs and sends whole, so one principal
#: asking ever new changes must not grow it without bound
MAX_OPEN_PER_REQUESTER = 10
MAX_OPEN = 100


def _fixed(intent: Intent, doc: StateDoc, cfg: Config) -> Intent:
    """A rollback without `to` goes to the previous stable: fixed when asked, so what the
    approvers review (and the hash binds) is the version it goes to, not whichever is the
    previous stable when the last approval comes (a promote in between moves it)."""
    rc = cfg.route(str(intent.target.get("route"))) if intent.action == "rollback" else None
    if rc is None or intent.args.get("to") is not None:
        return intent
    prev = previous_stable(doc, rc, effective_stable(doc, rc))
    ov = doc.overrides.get(rc.name)
    if prev is None or (ov is not None and ov.kind == "rollback") \
            or rc.version(prev.stable) is None:
        # (refused below: no previous stable, the one rolled off, or one the config lacks)
        return intent
    return dataclasses.replace(intent, args={**intent.args, "to": prev.stable})


class Approvals:
    def __init__(self, current: Current, state: StateWriter,
                 shadow: shadowgate.ShadowChecks | None = None, clock: Any = time.time) -> None:
        self.current = current
        self.state = state
        self.shadow = shadow or shadowgate.ShadowChecks(None, current)
        self.clock = clock

    # ------------------------------------------------------------------ reads

    def open(self) -> list[dict[str, Any]]:
        """The open requests, oldest first: a newer version's too, marked
        (`from_newer_version`), which an approver here must see to decide it there."""
        now = self.clock()
        return [a.public(newer) for a, newer in sorted(all_open(self.current.doc).values(),
                                                       key=lambda r: r[0].created)
                if a.expires > now]

    # ------------------------------------------------------------------ request

    async def request(self, intent: Intent, needs: int) -> Done:
        """Store `intent` as an open request (202), or answer with the open request for
        the same change. (`intent.trace_id` goes into the request's audit event.)"""
        cfg = self.current.loaded.config
        intent = _fixed(intent, self.current.doc, cfg)
        plan = actions.plan(intent, cfg)
        # refused now (404, 409, a shadow below its gate) rather than at approval
        (await self.shadow.wrap(shadowgate.route_of(intent), plan.change))(self.current.doc)
        intent = actions.bound_to_kill(intent, self.current.doc)  # (an unkill: which kill)
        digest = intent.change_hash()
        now = self.clock()
        rec = Approval(f"ap-{secrets.token_hex(8)}", actions.gate_of(intent) or intent.action,
                       intent, digest, needs, (intent.actor,), now, now + cfg.approvals.ttl)
        found: list[Approval] = []

        def change(cur: StateDoc) -> Change | None:
            # (a newer version's count too: they ride in the document as ours do)
            every = [(a, newer) for a, newer in all_open(cur).values() if a.expires > now]
            live = [a for a, _ in every]
            same = [a for a, newer in every if newer is None and a.hash == digest]
            if same:
                found[:] = same[:1]
                return None  # the same change is already waiting for approval
            found[:] = []
            who = principal_key(intent.actor)
            if (sum(principal_key(a.requested_by) == who for a in live) >= MAX_OPEN_PER_REQUESTER
                    or len(live) >= MAX_OPEN):
                raise ApprovalRefused(409, "too_many_approvals", (
                    f"too many requests are waiting for approval ({MAX_OPEN_PER_REQUESTER} per "
                    f"requester, {MAX_OPEN} in all): decline some (GET /v1/approvals) or let "
                    "them expire"))
            return Change(approvals={rec.id: rec.to_json()})

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft(intent.actor, "approval.request",
                              {"approval": rec.id, "action": intent.action, **intent.target},
                              intent.reason, None, rec.public(), intent.request_id,
                              intent.source, trace_id=intent.trace_id)

        def answer(new: StateDoc, ev: dict[str, Any] | None) -> Done:
            shown = found[0] if found else rec
            body: dict[str, Any] = {"approval": shown.public()}
            who = principal_key(intent.actor)
            if found and who not in {principal_key(a) for a in shown.approved_by}:
                # another's request for the same change: the asker is the other principal
                # it waits for (and has the action's scope), so say so rather than "wait"
                body["you_may_approve"] = True
            # (a retry with the Idempotency-Key gets this answer while the request can be
            # open; after, it asks anew)
            return Done(body, None, status=202, event=ev, keep=shown.expires - self.clock())

        # (its commit's answer lost: the key keeps this answer, and a retry that finds the
        # request landed is answered with it, a replay, as any write's; it ran the request
        # again, found the same id, and answered unmarked)
        with answered_if_landed(answer):
            new, ev = await self.state.write(change, describe)
        return answer(new, ev)

    # ------------------------------------------------------------------ approve / decline

    async def approve(self, approval_id: str, principal: Principal, expected: str | None,
                      reason: str, request_id: str, source: str, trace_id: str = "") -> Done:
        now = self.clock()
        step: dict[str, Any] = {}
        gates = await self.shadow.read(None)  # (the record, and so its route, is read below)

        def change(cur: StateDoc) -> Change:
            rec = open_request(cur, approval_id, now, principal.require)
            principal.require(actions.SCOPE_OF[rec.intent.action])
            if expected is not None and expected != rec.hash:
                raise ApprovalRefused(409, "approval_changed",
                                      "the change waiting for approval is not the one you "
                                      f"reviewed (hash {rec.hash[:12]}…, you named "
                                      f"{expected[:12]}…)")
            who = principal_key(principal.subject)
            if who == principal_key(rec.requested_by):
                raise ApprovalRefused(403, "self_approval",
                                      "a requester cannot approve their own request" + (
                                          f" (every token of the scoped key {who[4:]!r} is "
                                          "one principal, whatever its subject)"
                                          if who.startswith(SCOPED_ACTOR) else ""))
            if who in {principal_key(a) for a in rec.approved_by}:
                raise ApprovalRefused(409, "already_approved",
                                      f"{principal.subject} approved this request already")
            approved = (*rec.approved_by, principal.subject)
            if len(approved) < rec.needs:
                nxt = Approval(rec.id, rec.gate, rec.intent, rec.hash, rec.needs, approved,
                               rec.created, rec.expires)
                step.update(rec=nxt, plan=None)
                # the record as stored with one more approver: what it names of itself
                # kept (`format`, `written_by`: the version that asked; rewritten as
                # ours, a newer one read a record an older one had taken over)
                return Change(approvals={approval_id: {**cur.approvals[approval_id],
                                                       "approved_by": list(approved)}})
            intent = dataclasses.replace(rec.intent.with_audit(approval={
                "id": rec.id, "requested_by": rec.requested_by, "approved_by": list(approved),
                "hash": rec.hash, "final_reason": reason}), trace_id=trace_id)
            plan = actions.plan(intent, self.current.loaded.config)
            step.update(rec=rec, plan=plan, approved=approved)
            applied = plan.change(cur)
            shadowgate.refuse(gates, shadowgate.route_of(intent), cur, applied)  # the request stays open
            # the change and the request's end, in one state change
            return dataclasses.replace(applied or Change(), approvals={approval_id: None})

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            plan = step["plan"]
            if plan is not None:
                return plan.describe(cur, new)  # the action itself, naming its approvers
            rec = step["rec"]
            return AuditDraft(principal.subject, "approval.approve",
                              {"approval": rec.id, "action": rec.intent.action,
                               **rec.intent.target}, reason, None, rec.public(), request_id,
                              source, trace_id=trace_id)

        def answer(new: StateDoc, ev: dict[str, Any] | None) -> Done:
            scope = actions.SCOPE_OF[step["rec"].intent.action]
            if step["plan"] is None:
                # (a retry with the Idempotency-Key gets this answer while the request can
                # be open, as a request's; after, it asks anew: 409 approval_expired)
                return Done({"approval": step["rec"].public()}, None, status=202, event=ev,
                            scope=scope, keep=step["rec"].expires - self.clock())
            body = {**step["plan"].answer, "changed": True,
                    "approval": {"id": approval_id, "state": "applied",
                                 "approved_by": list(step["approved"])}}
            if ev is not None:
                body["audit_id"] = ev["id"]
            body.update(writenotes.notes(step["rec"].intent, new, self.current.loaded.config))
            return Done(body, new.generation, event=ev, scope=scope)

        with answered_if_landed(answer):
            new, ev = await self.state.write(change, describe)
        return answer(new, ev)

    async def decline(self, approval_id: str, principal: Principal, reason: str,
                      request_id: str, source: str, trace_id: str = "") -> Done:
        now = self.clock()
        seen: list[Approval] = []
        needed: list[str] = []  # (the scope it took: a replay's too)

        def change(cur: StateDoc) -> Change:
            raw = cur.approvals.get(approval_id)
            if raw is None:
                raise ApprovalRefused(404, "unknown_approval",
                                      f"no open approval {approval_id!r}")
            need = "killgate:read"  # (an invalid record may be dropped by any reader)
            newer: UnknownAction | None = None
            try:
                rec = Approval.from_json(raw)
                need = actions.SCOPE_OF[rec.intent.action]
            except UnknownAction as exc:
                # a newer version's request (rolling upgrade): its action's scope, or
                # where that is unknown here, the one that implies every scope (a reader
                # dropped it before)
                rec, need, newer = None, exc.scope, exc
            except ValueError:
                rec = None
            try:
                principal.require(need)
            except Forbidden as exc:
                if newer is not None and not newer.action:  # (why admin: said)
                    exc.message += newer_scope_note(approval_id, newer)
                raise
            seen[:] = [rec] if rec is not None else []
            needed[:] = [need]
            return Change(approvals={approval_id: None})

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            before = seen[0].public() if seen else cur.approvals.get(approval_id)
            expired = bool(seen) and seen[0].expires <= now
            return AuditDraft(principal.subject, "approval.decline",
                              {"approval": approval_id,
                               **({"action": seen[0].intent.action, **seen[0].intent.target}
                                  if seen else {})},
                              reason, before, {"state": "expired" if expired else "declined"},
                              request_id, source, trace_id=trace_id)

        def answer(new: StateDoc, ev: dict[str, Any] | None) -> Done:
            return Done({"approval": {"id": approval_id, "state": "declined"},
                         **({"audit_id": ev["id"]} if ev is not None else {})},
                        new.generation, event=ev, scope=needed[0])

        with answered_if_landed(answer):
            new, ev = await self.state.write(change, describe)
        return answer(new, ev)
