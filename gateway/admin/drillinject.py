"""What one drill injection changes, per kind, and who may make it (POST /v1/drills/{id}/inject).

Owns the injection's scope rules and its state change with its audit event: a kill (the
drill's version, its route, or global), a rollback, or a failover drill's fault. On a route
that serves users (no `drill_for`) an injection also needs the action's own scope, and
never does what `approvals:` gates; a global kill always counts as production. Pure apart
from reading the clock; the transitions are `gateway.domain.drills`'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.admin.auth import Principal
from gateway.admin.ports import Change as ChangeFn
from gateway.admin.ports import Describe
from gateway.config import Config, RouteConfig, parse_duration
from gateway.domain import drills
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.statedoc import Change, DrillRecord, StateDoc
from gateway.errors import ApiError, Forbidden

__all__ = ["FIELDS", "Injection", "injection"]

#: the body field each kind takes besides `reason`
FIELDS = {"kill": "scope", "store_loss": "scope", "rollback": "to", "failover": "ttl"}


@dataclass(frozen=True, slots=True)
class Injection:
    change: ChangeFn
    describe: Describe
    gated_route: str | None  # a rollback's route: the shadow gate checks it, as ever


def injection(rec: DrillRecord, rc: RouteConfig, body: dict[str, Any], principal: Principal,
              reason: str, meta: tuple[str, str], cfg: Config) -> Injection:
    """The change and audit event of injecting into `rec` (ApiError when refused)."""
    drill, actor = rec.id, principal.subject
    rid, peer = meta
    if time.time() > rec.deadline:
        # (its deadline bounds how long what it changes stays in force: the fleet restores
        # it past that, or never with auto_restore_after null; a late change would not be)
        raise ApiError(409, "drill_overdue", f"drill {drill} is past its deadline: it injects "
                       f"nothing more; restore it (killgate drill restore {drill}) and open "
                       "another")
    production = rc.drill_for is None
    if rec.kind in ("kill", "store_loss"):
        scope = body.get("scope")  # (absent or null: the default; {}, 0, "" are no scope)
        if scope is None:
            scope = "version" if rec.version else "route"
        if not isinstance(scope, str) or scope not in ("global", "route", "version"):
            raise ApiError(400, "bad_request", "'scope' must be one of global, route, version")
        if production or scope == "global":
            _require(principal, "killgate:kill")

        def kill(cur: StateDoc) -> Change:
            return drills.inject_kill(cur, drill, scope, actor, reason, utc_now())

        def killed(cur: StateDoc, new: StateDoc) -> AuditDraft:
            key = new.drills[drill].injected[-1]["kill"]
            return AuditDraft(actor, "kill", {
                "scope": scope, "route": None if scope == "global" else rec.route,
                "version": rec.version if scope == "version" else None},
                drills.tag(drill) + reason, None, new.kills[key].public(), rid, peer,
                {"drill": drill})
        return Injection(kill, killed, None)
    if rec.kind == "rollback":
        to = body.get("to")
        if to is not None and (not isinstance(to, str) or not to):
            raise ApiError(400, "bad_request", "'to' must be a version name")
        if production:
            _require(principal, "killgate:rollout")
            _ungated(cfg, "rollback")

        def rollback(cur: StateDoc) -> Change:
            return drills.inject_rollback(cur, drill, rc, to, actor, reason, utc_now())

        def rolled(cur: StateDoc, new: StateDoc) -> AuditDraft:
            ch = new.drills[drill].injected[-1]["override"]
            # (the rollout it ended, too: a restore from the trail alone puts it back)
            return AuditDraft(actor, "rollback", {"route": rc.name}, drills.tag(drill) + reason,
                              ch["before"], ch["after"], rid, peer,
                              {"drill": drill, "progress_before": ch["progress"]})
        return Injection(rollback, rolled, rc.name)
    if rec.kind == "failover":
        expires = time.time() + _ttl(cfg, body.get("ttl"))

        def fault(cur: StateDoc) -> Change:
            return drills.set_fault(cur, drill, expires)

        def faulted(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft(actor, "drill.fault",
                              {"drill": drill, "route": rec.route, "version": rec.version},
                              reason, None, {"expires": expires, "applies_to":
                                             "requests carrying this drill's token"},
                              rid, peer, {"drill": drill})
        return Injection(fault, faulted, None)
    raise ApiError(409, "nothing_to_inject", f"a {rec.kind} drill injects nothing through the API")


def _ttl(cfg: Config, raw: Any) -> float:
    limit = cfg.drills.max_fault_ttl
    if raw is None:
        return min(60.0, limit)
    try:
        ttl = parse_duration(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"'ttl': {exc}") from None
    if not 0 < ttl <= limit:
        raise ApiError(400, "bad_request",
                       f"'ttl' must be > 0 and at most {limit:g}s (drills.max_fault_ttl)")
    return ttl


def _ungated(cfg: Config, gate: str) -> None:
    """A drill injects directly: on a route that serves users it may not do what the
    two-person rule (approvals:) gates. Its restore, which only undoes the drill's own
    changes, is never gated (a drill must always be able to put things back)."""
    needs = cfg.approvals.needs(gate)
    if needs > 1:
        raise ApiError(409, "approval_required",
                       f"a {gate} on a route that serves users needs {needs} principals "
                       f"(approvals.{gate}), which a drill does not ask for: drill on a "
                       "drill route (drill_for) instead")


def _require(principal: Principal, scope: str) -> None:
    try:
        principal.require(scope)
    except Forbidden:
        raise ApiError(403, "forbidden", f"this drill touches what users are served: it "
                                         f"also needs the scope {scope!r}") from None
