"""One mapped alert's change, applied or observed: what `AlertReceiver` does once claimed.

Owns the change an intent makes (`change_for`), applying it through the writer with its
audit event (actor `alertmanager/<receiver>`, the alert as evidence) in `act`, and in
`observe` mode the audit event of what it would have done, nothing changed. No claims, no
rate bound, no answer shape: those are `control.alertclaims` and `control.alerts`. Logs
under killgate.alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import Config
from gateway.domain import alerting
from gateway.domain.alerting import Intent
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.statedoc import Change, StateDoc, apply_change
from gateway.log import event

__all__ = ["Call", "ChangeFn", "Writer", "act", "change_for", "observe"]

log = logging.getLogger("killgate.alerts")

ChangeFn = Callable[[StateDoc], Change | None]
Describe = Callable[[StateDoc, StateDoc], AuditDraft]


class Writer(Protocol):
    """What the receiver needs of `state.sync.Sync`."""

    async def write(self, change: ChangeFn, describe: Describe) -> tuple[StateDoc, dict[str, Any] | None]: ...

    async def append_audit(self, draft: AuditDraft) -> dict[str, Any] | None: ...

    async def receipt(self, generation: int, wait: float) -> dict[str, Any]: ...

    def confirmed(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Call:
    """The admin call that brought a notification, for the audit events it causes."""

    request_id: str
    peer: str
    trace_id: str = ""
    caller: str = ""  # the subject of the token that posted it


async def act(writer: Writer, entry: dict[str, Any], want: Intent, change: ChangeFn, actor: str,
              reason: str, evidence: dict[str, Any], call: Call) -> dict[str, Any]:
    """Apply the change with its audit event; `entry` (the alert's answer) says how it went."""

    def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
        return AuditDraft(actor, want.action, want.target or {}, reason,
                          alerting.touched(cur, want), alerting.touched(new, want),
                          call.request_id, call.peer, extra={"evidence": evidence},
                          trace_id=call.trace_id)

    new, ev = await writer.write(change, describe)
    entry.update(generation=new.generation, outcome="acted" if ev is not None else
                 "unchanged")
    if ev is None:
        entry["message"] = "already in force; nothing changed"
    else:
        entry["audit_id"] = ev["id"]
    event(log, "alert_action", logging.WARNING, actor=actor, action=want.action,
          target=want.target, fingerprint=entry["fingerprint"], changed=ev is not None,
          generation=new.generation)
    return entry


async def observe(writer: Writer, doc: Callable[[], StateDoc], entry: dict[str, Any],
                  want: Intent, change: ChangeFn, actor: str, reason: str,
                  evidence: dict[str, Any], call: Call) -> dict[str, Any]:
    """Observe mode: the audit event of what the change would have done; nothing changes."""
    cur = doc()
    ch = change(cur)
    would = ch is not None
    new = apply_change(cur, ch) if ch is not None else cur
    draft = AuditDraft(actor, f"alert.observe.{want.action}", want.target or {},
                       f"observe mode, nothing changed; would have: {want.message} "
                       f"({reason})", alerting.touched(cur, want),
                       alerting.touched(new, want), call.request_id, call.peer,
                       extra={"evidence": evidence, "would_change": would},
                       trace_id=call.trace_id)
    ev = await writer.append_audit(draft)
    entry.update(outcome="dry_run", message=f"observe mode: would {want.message}"
                 + ("" if would else " (already in force)"))
    if ev is not None:
        entry["audit_id"] = ev["id"]
    event(log, "alert_observed", actor=actor, action=want.action, target=want.target,
          fingerprint=entry["fingerprint"], would_change=would)
    return entry


def change_for(want: Intent, config: Config, actor: str, reason: str) -> ChangeFn:
    """The change `want` makes to a state document (None: already in force)."""
    assert want.route is not None
    route, version = want.route, want.version
    if want.action == "kill":
        def kill(cur: StateDoc) -> Change | None:
            return alerting.kill(cur, route, version, actor, reason, utc_now(), config)
        return kill
    rc = config.route(route)
    assert rc is not None  # (intent checked it)

    def rollback(cur: StateDoc) -> Change | None:
        return alerting.rollback(cur, rc, version, actor, reason, utc_now())
    return rollback
