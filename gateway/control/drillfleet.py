"""What a drill runs against, read from the admin API before it opens: the route (its
status and config), the instances (from their heartbeats, or `--instances`), their admin
addresses, and the state and drills sections of the running config.

Owns `discover` and its refusals (an unknown route or version, no instance that published
its address), each a DrillApiError, and `published` (the admin URLs a status answer's
instances published). HTTP goes through control/drillload.py's AdminClient.
"""

from __future__ import annotations

from typing import Any

from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.drillplan import Plan

__all__ = ["discover", "published"]


async def discover(api: AdminClient, plan: Plan) -> dict[str, Any]:
    status = await api.call("GET", "/v1/status")
    cfg = await api.call("GET", "/v1/config")
    route = status.get("routes", {}).get(plan.route)
    rcfg = next((r for r in cfg.get("config", {}).get("routes", [])
                 if r.get("name") == plan.route), None)
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
    return {"status": status, "route": route, "config": rcfg, "instances": urls,
            "admins": admins, "data_of": data_of, "data_at": data_at,
            "state": cfg.get("config", {}).get("state") or {},
            "drills": cfg.get("config", {}).get("drills") or {}}


def published(instances: Any) -> dict[str, str]:
    """The admin URL each instance of a status answer's `instances` published."""
    return {name: i["admin"] for name, i in (instances or {}).items()
            if isinstance(i, dict) and isinstance(i.get("admin"), str)} \
        if isinstance(instances, dict) else {}
