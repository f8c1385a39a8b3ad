"""What a drill runs against, read from the admin API before it opens: the route (its
status and config), the instances (from their heartbeats, or `--instances`), their admin
addresses, and the state and drills sections of the running config.

Owns `discover` and its refusals (an unknown route or version, no instance that published
its address, an instance that cannot reach the store or holds emergency local kills not yet
in it: `store_refusal`), each a DrillApiError; `published` (the admin URLs a status answer's
instances published); `with_builds` (the report's rows with the build each instance
runs); the keys an opened drill got to check /readyz proofs with (`readyz_keys`), and the
warning when a fleet on redis gave none (`no_keys`). HTTP goes through
control/drillload.py's AdminClient.
"""

from __future__ import annotations

from typing import Any

from gateway.buildid import said_build
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.drillplan import Plan

__all__ = ["discover", "no_keys", "published", "readyz_keys", "store_refusal", "with_builds"]


def store_refusal(status: Any) -> str | None:
    """Why no drill may open through the instance whose /v1/status is `status` (None: it
    may): it holds emergency local kills not yet in the store (an incident is on: a drill
    would kill and restore through a store the fleet's kills are not all in, and measure
    instances that enforce different kills), or it cannot reach the store (a drill opens,
    injects and restores through it)."""
    store = status.get("store") if isinstance(status, dict) else None
    if not isinstance(store, dict):
        return None
    local = store.get("local_kills")
    kills = local.get("kills") if isinstance(local, dict) else None
    if isinstance(kills, list) and kills:
        named = ", ".join(str(k.get("kill")) for k in kills[:5] if isinstance(k, dict))
        return (f"instance {status.get('instance')} holds {len(kills)} emergency local "
                f"kill(s) not yet in the state store ({named}): no drill while the store "
                "cannot take them (a drill's kill and restore go through the store, and the "
                "fleet's instances enforce different kills until they are merged); fix the "
                "store, wait until `killgate status` shows no LOCAL KILL NOT IN STORE, then "
                "drill")
    if store.get("pushes") == "cut":
        return (f"instance {status.get('instance')} reads the state store, but its "
                f"subscription to the store's pushes is refused or cut "
                f"({store.get('last_error')}): it hears of changes only at its polls, and a "
                "drill measures how fast they reach the fleet; fix the subscription (a "
                "redis ACL without the prefix's channels, a proxy cutting pub/sub) or ask "
                "another instance with --admin, then drill")
    if store.get("connected") is False and store.get("backend") not in (None, "local"):
        return (f"instance {status.get('instance')} cannot reach the state store "
                f"({store.get('last_error')}): a drill opens, injects and restores through "
                "it; fix the store (or ask another instance with --admin), then drill")
    return None


async def discover(api: AdminClient, plan: Plan) -> dict[str, Any]:
    status = await api.call("GET", "/v1/status")
    if (why := store_refusal(status)) is not None:
        raise DrillApiError(503, "store_not_ready", why)
    cfg = await api.call("GET", "/v1/config")
    route = status.get("routes", {}).get(plan.route)
    config = cfg.get("config")
    listed = config.get("routes") if isinstance(config, dict) else None
    rcfg = next((r for r in (listed if isinstance(listed, list) else [])
                 if isinstance(r, dict) and r.get("name") == plan.route), None)
    if route is None or rcfg is None:
        raise DrillApiError(404, "unknown_route", f"no route named {plan.route!r}")
    for v in (plan.version, plan.to):
        if v is not None and v not in route["versions"]:
            raise DrillApiError(404, "unknown_version",
                                f"route {plan.route!r} has no version {v!r}")
    insts = status.get("instances", {}).values()
    urls = plan.instances or sorted({i["data"] for i in insts if i.get("data")})
    admins = sorted({i["admin"] for i in insts if i.get("admin")})
    if not urls:
        raise DrillApiError(0, "no_instances", "no instance published its address (give "
                            "--instances URL,...)")
    data_of = {name: i["data"] for name, i in
               (status.get("instances") or {}).items() if i.get("data")}
    data_at = {i["admin"]: i["data"] for i in insts if i.get("admin") and i.get("data")}
    # (the build each data address runs, as its heartbeat said: the report's rows name it)
    # (hex only: whatever answers at the admin address writes the report's table)
    build_at = {i["data"]: b for i in insts
                if isinstance(i.get("data"), str) and (b := said_build(i.get("build")))}
    return {"status": status, "route": route, "config": rcfg, "instances": urls,
            "admins": admins, "data_of": data_of, "data_at": data_at, "build_at": build_at,
            "state": _section(cfg, "state"), "drills": _section(cfg, "drills")}


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """A section of a /v1/config answer, {} when it is not one (whatever answers at the
    admin address chooses its shape: never an AttributeError for a drill to die of)."""
    config = cfg.get("config")
    section = config.get(name) if isinstance(config, dict) else None
    return section if isinstance(section, dict) else {}


def published(instances: Any) -> dict[str, str]:
    """The admin URL each instance of a status answer's `instances` published."""
    return {name: i["admin"] for name, i in (instances or {}).items()
            if isinstance(i, dict) and isinstance(i.get("admin"), str)} \
        if isinstance(instances, dict) else {}


def readyz_keys(raw: Any) -> dict[str, str]:
    """An open answer's `readyz_keys` (key id → hex key), what of it is well-formed."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)
            and len(v) <= 128}


def no_keys(keys: dict[str, str], state: Any, base: str) -> str | None:
    """The warning for a drill opened without `readyz_keys` in a fleet whose store needs a
    state signing key (`state`: the running config's): an opener older than the proofs."""
    if keys or not isinstance(state, dict) or state.get("backend") != "redis":
        return None
    return (f"WARNING: the instance that opened the drill (at {base}) gave no keys to check "
            "the instances' /readyz proofs with, though a fleet on redis has a state signing "
            "key: a killgate older than the proofs (a rolling upgrade)? What the instances "
            "answer after the restore is taken at their word (restore_check.proof: "
            "unproven); open the drill through an upgraded instance (--admin) to check it")


def with_builds(report: dict[str, Any], fleet: dict[str, Any]) -> dict[str, Any]:
    """`report` (domain.drillreport.analyse's) with each instance row's `build`: the one
    the instance at that data address published with its heartbeat (None: it said none, a
    version before, or an address given with --instances that none published)."""
    build_at = fleet.get("build_at") or {}
    for row in report.get("instances") or ():
        row["build"] = build_at.get(row.get("instance"))
    return report
