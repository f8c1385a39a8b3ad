"""The status document of GET /v1/status (CONTRACT §4): what this instance enforces, and why.

Owns the shape of the document. It reads the parts it describes through small protocols
(the routing snapshot, health, canary analysis, the store's status, the last reload), so
it is built outside the composition root and tested without one. Imports the domain and
foundations only; pure apart from calling those read-only views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.configfile import LoadedConfig
from gateway.domain.drills import drill_latch
from gateway.domain.kills import unrouted
from gateway.domain.rolledoff import held_off
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import RoutePlan
from gateway.domain.statedoc import StateDoc, plain
from gateway.domain.tablebuild import override_missing

__all__ = ["ReloadView", "RoutingView", "StatusBuilder", "stable"]


class RoutingView(Protocol):
    """The routing snapshot in force and the config it was built from."""

    @property
    def table(self) -> RouteTable: ...

    @property
    def loaded(self) -> LoadedConfig: ...


class ReloadView(Protocol):
    """The outcome of the last config reload (control.reload.ReloadOutcome)."""

    @property
    def loaded_at(self) -> str | None: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def last_problems(self) -> list[str]: ...

    @property
    def last_attempt(self) -> str | None: ...

    @property
    def restart_required(self) -> list[str]: ...

    @property
    def waiting(self) -> str | None: ...

    @property
    def warnings(self) -> list[str]: ...


class StatusBuilder:
    """Builds the document from read-only views; every view may be absent (None) while
    the process starts."""

    def __init__(self, instance: str, routing: RoutingView,
                 health: Callable[[], Mapping[tuple[str, str], Any]] | None = None,
                 analysis: Callable[[str], dict[str, Any] | None] | None = None,
                 store: Callable[[], dict[str, Any]] | None = None,
                 reload: Callable[[], ReloadView | None] | None = None,
                 audits: Callable[[], list[dict[str, Any]]] | None = None,
                 dropped: Callable[[], dict[str, Any] | None] | None = None) -> None:
        self.instance = instance
        self.routing = routing
        self.health = health
        self.analysis = analysis
        self.store = store
        self.reload = reload
        self.audits = audits  # the config changes whose audit event waits for the store
        self.dropped = dropped  # and those dropped unrecorded: how many, the last

    def config_status(self) -> dict[str, Any]:
        loaded = self.routing.loaded
        out: dict[str, Any] = {"digest": loaded.digest, "loaded_digest": loaded.digest,
                               "path": str(loaded.path)}
        o = self.reload() if self.reload is not None else None
        if o is not None:
            out.update(loaded_at=o.loaded_at, last_error=o.last_error,
                       problems=list(o.last_problems), last_attempt=o.last_attempt,
                       restart_required=list(o.restart_required),
                       waiting=o.waiting, warnings=list(o.warnings))
        else:
            out.update(loaded_at=None, last_error=None, problems=[], last_attempt=None,
                       restart_required=[], waiting=None, warnings=[])
        out["audit_pending"] = self.audits() if self.audits is not None else []
        out["audit_dropped"] = self.dropped() if self.dropped is not None else None
        return out

    def document(self) -> dict[str, Any]:
        """The whole document, built anew (admin/statusparts.py keeps its parts)."""
        table = self.routing.table
        health = self.health() if self.health is not None else {}
        return {**self.head(table), "config": self.config_status(),
                "store": self.store() if self.store is not None else None,
                "routes": {plan.config.name: self.route(table, plan, health)
                           for plan in table.routes}}

    def route(self, table: RouteTable, plan: RoutePlan,
              health: Mapping[tuple[str, str], Any]) -> dict[str, Any]:
        """One route's part of `routes`: what the table, the health checks and the canary
        analysis say of it."""
        doc = table.doc
        rc = plan.config
        eff = plan.effective_weights()
        ov = doc.overrides.get(rc.name)
        return {
            "stable": plan.stable,
            # a drill route (README "Recovery drills"): the same versions, reached only by
            # drills' requests; said, since it reads like a second copy of the real route
            "drill_for": rc.drill_for,
            "latched": ov is not None,
            "override": None if ov is None else {
                "kind": ov.kind, "stable": ov.stable, "weights": ov.weights, "actor": ov.actor,
                "reason": ov.reason, "time": ov.time, "drill": _drill(doc, rc.name)},
            "killed": plan.killed,
            # the versions the override serves that this config lacks: none serves here
            "override_unservable": list(plan.override_unservable) or None,
            # every version the override gives traffic that this config lacks, also
            # while another still serves (it then takes their share: another split)
            "override_missing": list(override_missing(rc, doc)) or None,
            "versions": {v.name: {
                "url": v.url, "artifact": v.artifact, "configured_weight": v.weight,
                "effective_weight": eff.get(v.name, 0.0),
                # (out only by its ejection, and taken back: no other version could
                # serve; its checks pass, it serves, `health` shows the ejection)
                "healthy": (rc.name, v.name) not in table.unhealthy
                or v.name not in plan.excluded,
                **({"health": health.get((rc.name, v.name))} if health else {}),
                "killed": plan.excluded.get(v.name) == "killed" or plan.killed is not None,
            } for v in rc.versions},
            "previous_known_good": plan.previous,
            # the versions rollbacks took off: never a rollback's default target again
            # (nor an automatic one's) until an operator names them (domain/rolledoff.py)
            "rolled_off": [{"version": x.version, "artifact": x.artifact, "kind": x.kind,
                            "actor": x.actor, "time": x.time}
                           for x in held_off(doc, rc).values()],
            "shadow": None if rc.shadow is None else {  # §5.5; results: /v1/routes/R/shadow
                "version": rc.shadow.version, "sample": rc.shadow.sample,
                # (`sample: 0` copies nothing: a shadow parked, not mirroring)
                "mirroring": plan.shadow is not None and rc.shadow.sample > 0,
                "off": plan.shadow_off or ("sample_zero" if rc.shadow.sample <= 0
                                           and plan.shadow is not None else None)},
            "analysis": self.analysis(rc.name) if self.analysis is not None else None,
            "history": [plain(h) for h in doc.history.get(rc.name, ())],
        }

    def head(self, table: RouteTable) -> dict[str, Any]:
        """What the document says beside its routes that the table alone decides (the
        store's status and the last reload's are asked on every call: `document`)."""
        doc = table.doc
        gone = unrouted(doc, (plan.config for plan in table.routes))
        names = {plan.config.name for plan in table.routes}
        return {
            "instance": self.instance,
            "generation": doc.generation,
            # (a kill `local`: an emergency local kill, enforced here, not yet in the store)
            "kills": [{**f.public(), "id": f.ident(), "routed": f.key not in gone,
                       "local": f.write.startswith("local:")}
                      for f in doc.kills.values()],
            # the artifact recorded for each version name ever seen (versions are immutable:
            # a reload giving a name another artifact is refused; `killgate diff` says so too)
            "identities": {r: {v: {"artifact": rec["artifact"], "time": rec.get("time")}
                               for v, rec in sorted(vs.items()) if rec.get("artifact")}
                           for r, vs in sorted(doc.identities.items())},
            # overrides latched on a route this config lacks (dropped or renamed): they
            # latch nothing here until the name comes back, then are in force again
            # (`killgate release ROUTE` drops one: admin/orphanrelease.py)
            "overrides_unrouted": [
                {"route": name, "kind": ov.kind, "stable": ov.stable, "weights": ov.weights,
                 "actor": ov.actor, "reason": ov.reason, "time": ov.time,
                 "drill": _drill(doc, name)}
                for name, ov in sorted(doc.overrides.items()) if name not in names],
        }


def _drill(doc: StateDoc, route: str) -> dict[str, Any] | None:
    """The open drill whose injection a route's override is: its id, and whether its
    restore puts a latch of the route's own back (`over_latch`) or leaves the route
    unlatched (a reload may then drop the route: domain/reloadcheck.py, as `diff` says)."""
    found = drill_latch(doc, route)
    return None if found is None else {"id": found[0], "over_latch": found[1]}


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """`?fields=stable` (the console's read): the document without what changes on every
    call while nothing else does, so that its ETag holds between rounds (admin/etag.py):
    `instances` (heartbeat ages; GET /v1/fleet has them) and `store.staleness_ms` while not
    `stale` (null then; past max_staleness it is given, and changes the ETag every call)."""
    doc.pop("instances", None)
    store = doc.get("store")
    if isinstance(store, dict) and not store.get("stale"):
        store["staleness_ms"] = None
    return doc
