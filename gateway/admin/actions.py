"""Admin writes as values: an `Intent` (who asks what, why) and its `Plan` (the change to
the state document, its audit event, what the answer says).

Owns the validation of each write's body against the config in force and the one place
an intent becomes a change, so a write applied at once and one applied later by an
approval (admin/approvals.py) do exactly the same thing. Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from gateway.admin import orphanrelease
from gateway.admin.writenotes import still_covered, unknown_route
from gateway.config import Config, RouteConfig
from gateway.domain import kills, overrides
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.overrides import effective_stable
from gateway.domain.slotted import fast_init
from gateway.domain.statedoc import Change, RouteOverride, StateDoc, kill_key
from gateway.errors import ApiError, ConflictingState, unknown_version

__all__ = ["ACTIONS", "SCOPE_OF", "Intent", "Plan", "bound_to_kill", "gate_of", "intent",
           "plan"]

#: action -> the body fields it takes besides `reason` (and `break_glass`)
ACTIONS: dict[str, frozenset[str]] = {
    "kill": frozenset({"scope", "route", "version", "abort_inflight"}),
    "unkill": frozenset({"scope", "route", "version", "kill"}),
    "rollback": frozenset({"to"}),
    "promote": frozenset({"version"}),
    "weights": frozenset({"weights"}),
    "release": frozenset(),
}
SCOPE_OF = {"kill": "killgate:kill", "unkill": "killgate:kill", "rollback": "killgate:rollout",
            "promote": "killgate:rollout", "weights": "killgate:rollout",
            "release": "killgate:rollout"}


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


@fast_init
@dataclass(frozen=True, slots=True)
class Intent:
    """One validated write: `target` says what it acts on, `args` the rest of its body."""

    action: str
    target: dict[str, Any]
    args: dict[str, Any]
    reason: str
    actor: str
    request_id: str = ""
    source: str = ""
    #: added to the audit event (an approval's record, a break-glass flag)
    audit: dict[str, Any] = field(default_factory=dict)
    trace_id: str = ""  # the admin call's trace (obs-tracing), recorded in its audit event

    def change_hash(self) -> str:
        """SHA-256 over what the write would change (not who asks, why, or when): an
        approval is bound to it, so an approval never applies to a different change."""
        canon = json.dumps({"action": self.action, "target": self.target, "args": self.args},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode()).hexdigest()

    def with_audit(self, **extra: Any) -> Intent:
        return dataclasses.replace(self, audit={**self.audit, **extra})


@fast_init
@dataclass(frozen=True, slots=True)
class Plan:
    change: Callable[[StateDoc], Change | None]  # None: nothing to change
    describe: Callable[[StateDoc, StateDoc], AuditDraft]
    answer: dict[str, Any]  # what the answer says beside the receipt


def gate_of(i: Intent) -> str | None:
    """The `approvals:` key that governs this intent; None for a kill (never gated)."""
    if i.action == "kill":
        return None
    if i.action == "unkill":
        return f"unkill_{i.target['scope']}"
    return i.action


# ---------------------------------------------------------------------------- parsing


def _route(cfg: Config, name: Any) -> RouteConfig:
    rc = cfg.route(name) if isinstance(name, str) else None
    if rc is None:
        raise unknown_route(cfg, name)
    return rc


def _selector(body: dict[str, Any], cfg: Config,
              killed: Collection[str] = ()) -> dict[str, Any]:
    """A kill's or an unkill's target; `killed`: the kill keys in force, whose names an
    unkill may give though this config lacks them (an alert's kill of a name not rolled
    out here, a route the config dropped): such a kill must stay liftable."""
    scope = body.get("scope")
    if scope not in ("global", "route", "version"):
        raise bad(("'scope' is missing" if scope is None else "'scope' must be one of global, "
                   "route, version") + ": send \"scope\": \"version\" with \"route\" and "
                  "\"version\" for a version kill, \"route\" with \"route\" for a route kill, "
                  "or \"global\"")
    route, version = body.get("route"), body.get("version")
    if scope == "global":
        if route is not None or version is not None:
            raise bad("a global kill takes no route or version")
        return {"scope": scope, "route": None, "version": None}
    if not isinstance(route, str) or not route:
        raise bad(f"scope {scope!r} needs 'route'")
    if scope == "route":
        if version is not None:
            raise bad("a route kill takes no version; use scope 'version'")
        if not killed or kill_key(scope, route, None) not in killed:
            _route(cfg, route)
        return {"scope": scope, "route": route, "version": None}
    if not isinstance(version, str) or not version:
        raise bad("scope 'version' needs 'version'")
    if killed and kill_key(scope, route, version) in killed:
        return {"scope": scope, "route": route, "version": version}
    rc = _route(cfg, route)
    if rc.version(version) is None:
        exc = ApiError(404, "unknown_version", unknown_version(
            route, version, [v.name for v in rc.versions]))
        exc.bare = unknown_version(route, version)  # type: ignore[attr-defined]
        raise exc
    return {"scope": scope, "route": route, "version": version}


def intent(action: str, body: dict[str, Any], route: str | None, cfg: Config, actor: str,
           reason: str, request_id: str = "", source: str = "",
           killed: Collection[str] = (), latched: Collection[str] = (),
           trace_id: str = "") -> Intent:
    """Validate a write's body (types, names known to the config, or for an unkill of a
    kill in force, `killed`; for a release, a route an override latches, `latched`:
    admin/orphanrelease.py) into an Intent (`trace_id`: the call's trace, as the Intent's)."""
    args: dict[str, Any] = {}
    if action in ("kill", "unkill"):
        target = _selector(body, cfg, killed if action == "unkill" else ())
        if action == "kill":
            abort = body.get("abort_inflight", True)
            if not isinstance(abort, bool):
                raise bad("'abort_inflight' must be true or false")
            args["abort_inflight"] = abort
        elif (kill := body.get("kill")) is not None:
            # the kill's `id` as /v1/status showed it: lift that kill, not one made since
            if (not isinstance(kill, str) or not 1 <= len(kill) <= 64 or not kill.isascii()
                    or not kill.isprintable()):
                raise bad("'kill' must be a kill's id as /v1/status shows it")
            args["kill"] = kill
    elif action == "release" and isinstance(route, str) and route in latched \
            and cfg.route(route) is None:
        target = {"route": route}  # (an orphan: admin/orphanrelease.py)
    else:
        target = {"route": _route(cfg, route).name}
        if action == "rollback":
            to = body.get("to")
            if to is not None and (not isinstance(to, str) or not to):
                raise bad("'to' must be a version name")
            args["to"] = to
        elif action == "promote":
            version = body.get("version")
            if not isinstance(version, str) or not version:
                raise bad("'version' is required")
            args["version"] = version
        elif action == "weights":
            weights = body.get("weights")
            if not isinstance(weights, dict) or not weights:
                raise bad("'weights' must be an object of version: weight")
            # numbers as the change stores them: `1` and `1.0` are one change, one hash
            # (an approval asked twice for it is the same request, not a second one)
            args["weights"] = {k: float(v) if isinstance(v, int | float) and not isinstance(
                v, bool) and -1e308 < v < 1e308 else v for k, v in weights.items()}
    return Intent(action, target, args, reason, actor, request_id, source, trace_id=trace_id)


# ---------------------------------------------------------------------------- plans


def _override_json(ov: RouteOverride | None, stable: str) -> dict[str, Any]:
    if ov is None:
        return {"latched": False, "stable": stable}
    return {"latched": True, "kind": ov.kind, "stable": ov.stable, "weights": ov.weights}


def plan(i: Intent, cfg: Config) -> Plan:
    """The change an intent makes, checked again against the config in force (an approved
    intent may be applied after a reload removed its route)."""
    if i.action == "kill":
        return _kill(i, cfg)
    if i.action == "unkill":
        return _unkill(i, cfg)
    route = i.target["route"]
    if i.action == "release" and isinstance(route, str) and cfg.route(route) is None:
        return Plan(orphanrelease.change(route), lambda cur, new: _draft(
            i, {"route": route}, orphanrelease.before(cur, route), {"latched": False}),
            {"route": route, "action": i.action})
    return _route_plan(i, _route(cfg, route))


def _draft(i: Intent, target: dict[str, Any], before: Any, after: Any) -> AuditDraft:
    return AuditDraft(i.actor, i.action, target, i.reason, before, after, i.request_id,
                      i.source, extra=dict(i.audit) or None, trace_id=i.trace_id)


def _kill(i: Intent, cfg: Config) -> Plan:
    t = _selector(i.target, cfg)
    key = kill_key(t["scope"], t["route"], t["version"])
    abort = bool(i.args.get("abort_inflight", True))

    def change(cur: StateDoc) -> Change | None:
        # the one kill rule (domain/kills.py): a kill in force changes nothing (a retry
        # after `outcome_unknown`, a second operator) but may be asked to cut in-flight
        # answers too; one an open drill holds is taken over, so the drill's restore
        # leaves the operator's kill in force
        return kills.kill(cur, t["scope"], t["route"], t["version"], i.actor, i.reason,
                          utc_now(), abort)

    def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
        before = cur.kills.get(key)
        return _draft(i, t, before.public() if before else None, new.kills[key].public())

    return Plan(change, describe, {"kill": key})


def bound_to_kill(i: Intent, doc: StateDoc) -> Intent:
    """An unkill asked for approval names the kill in force as it was asked (`args.kill`,
    so in its hash): the approval lifts that kill, never one made after it (lifted and
    killed again meanwhile, by another incident) that no one asked to lift."""
    if i.action != "unkill" or "kill" in i.args:  # (named by the caller: that one)
        return i
    flag = doc.kills.get(kill_key(i.target["scope"], i.target["route"], i.target["version"]))
    return i if flag is None else dataclasses.replace(i, args={**i.args,
                                                               "kill": flag.ident()})


def _unkill(i: Intent, cfg: Config) -> Plan:
    # checked when asked (`intent`); a reload since that dropped the name does not make
    # lifting the kill wrong (the change refuses when no such kill is in force)
    t: dict[str, Any] = {k: i.target.get(k) for k in ("scope", "route", "version")}
    key = kill_key(t["scope"], t["route"], t["version"])
    asked = i.args.get("kill")

    def change(cur: StateDoc) -> Change:
        flag = cur.kills.get(key)
        if flag is None:
            base = f"there is no {t['scope']} kill for that selector"
            exc = ConflictingState("not_killed", base + still_covered(cur, t))
            # (without the narrower kills' names, for a caller who may not read them)
            exc.bare = base + still_covered(cur, t, narrower=False)  # type: ignore[attr-defined]
            raise exc
        if asked is not None and flag.ident() != asked:
            raise ConflictingState("kill_replaced", (
                f"the {key} kill in force ({flag.actor}, {flag.time}, id {flag.ident()}) is "
                "not the one this unkill was asked for: that one was lifted and the key "
                "killed again since; ask for the unkill of this one anew"))
        return Change(kills={key: None})

    def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
        return _draft(i, t, cur.kills[key].public(), None)

    return Plan(change, describe, {"unkill": key})


def _route_plan(i: Intent, rc: RouteConfig) -> Plan:
    a = i.args
    now = utc_now()

    def change(cur: StateDoc) -> Change:
        if i.action == "rollback":
            return overrides.rollback(cur, rc, a.get("to"), i.actor, i.reason, now)
        if i.action == "promote":
            return overrides.promote(cur, rc, a["version"], i.actor, i.reason, now)
        if i.action == "weights":
            return overrides.set_weights(cur, rc, a["weights"], i.actor, i.reason, now)
        if i.action == "release":
            return overrides.release(cur, rc, i.actor, i.reason, now)
        raise ValueError(f"unknown action {i.action!r}")

    def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
        before, after = cur.overrides.get(rc.name), new.overrides.get(rc.name)
        return _draft(i, {"route": rc.name}, _override_json(before, effective_stable(cur, rc)),
                      _override_json(after, effective_stable(new, rc)))

    return Plan(change, describe, {"route": rc.name, "action": i.action})
