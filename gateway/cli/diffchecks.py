"""What `killgate diff` checks of a file against the running gateway's status, beyond the
config's own differences: kills the file would route around or revive, and whether the
gateway's reload would refuse it (a version an override serves dropped, a latched route
renamed or dropped, a version name given another artifact).

Owns `kills_by_routing` and `latched_routes`, over the admin API's `/v1/status` answer (read by
cli/configtools.py); the rules themselves are the domain's (domain/overrides.py,
domain/droppedlatch.py), the same the gateway applies.
"""

from __future__ import annotations

from typing import Any

from gateway.cli.client import ClientError

__all__ = ["artifacts", "kills_by_routing", "latched_routes"]


def kills_by_routing(kills: list[Any], loaded: Any) -> tuple[list[dict[str, Any]],
                                                              list[dict[str, Any]]]:
    """The route and version kills in force whose route or version `loaded` lacks (with it
    live they stop nothing: a route renamed in the file serves the killed traffic), and
    those the running gateway does not route (`routed: false`) that `loaded` has (a kill
    made of a name it lacked, by an alert say, stops that name once the file is live)."""
    names = {r.name: {v.name for v in r.versions} for r in loaded.config.routes}
    dropped, revived = [], []
    for k in kills:
        if not isinstance(k, dict) or k.get("scope") not in ("route", "version"):
            continue
        route, version = str(k.get("route")), k.get("version")
        key = f"{k['scope']}:{route}" + (f":{version}" if k["scope"] == "version" else "")
        row = {"kill": key, "by": str(k.get("actor")), "reason": str(k.get("reason"))}
        if route in names and (k["scope"] == "route" or str(version) in names[route]):
            if k.get("routed") is False:
                revived.append(row)
        else:
            dropped.append(row)
    return dropped, revived


def latched_routes(routes: dict[str, Any], loaded: Any) -> list[str]:
    """The routes of the running gateway a runtime override latches; a ConfigError when
    its reload of `loaded` would be refused: for dropping a version an override serves (or
    the route an override latches: renamed, say), or
    for giving a version name the gateway knows another artifact (its running versions'
    and its history's: versions are immutable, as `serve` checks against its record)."""
    from gateway.domain.droppedlatch import dropped_latched
    from gateway.domain.overrides import identity_problems, latch_problems
    from gateway.domain.statedoc import RouteOverride, StateDoc
    from gateway.errors import ConfigError, Problem

    overrides = {}
    known: dict[str, dict[str, dict[str, Any]]] = {}
    for name, r in routes.items():
        known[name] = artifacts(r)
        ov = r.get("override") if isinstance(r, dict) else None
        if isinstance(ov, dict):
            try:
                overrides[name] = RouteOverride(
                    ov.get("stable"), {str(k): float(w) for k, w in ov["weights"].items()},
                    str(ov.get("actor")), str(ov.get("reason")), str(ov.get("time")),
                    str(ov.get("kind")))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ClientError(f"unexpected answer from the admin API: the override of "
                                  f"route {name!r}") from None
    mine = list(loaded.config.routes)
    problems = (identity_problems(StateDoc(identities=known), mine)
                + latch_problems(StateDoc(), mine, overrides)
                + dropped_latched(overrides, routes, mine))
    if problems:
        raise ConfigError([Problem(p, "the running gateway would refuse it: " + m)
                           for p, m in problems])
    return sorted(overrides)


def artifacts(route: Any) -> dict[str, dict[str, Any]]:
    """Version name -> the artifact a running gateway's status shows it with (its
    config's, then its history's), as identity records."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(route, dict):
        return out
    history = route.get("history")
    for h in history if isinstance(history, list) else ():
        if isinstance(h, dict) and isinstance(h.get("stable"), str) \
                and isinstance(h.get("artifact"), str) and h["artifact"]:
            out[h["stable"]] = {"artifact": h["artifact"], "time": h.get("time")}
    versions = route.get("versions")
    for name, v in (versions.items() if isinstance(versions, dict) else ()):
        if isinstance(v, dict) and isinstance(v.get("artifact"), str) and v["artifact"]:
            out[str(name)] = {"artifact": v["artifact"]}
    return out
