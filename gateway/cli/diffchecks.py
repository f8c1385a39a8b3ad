"""What `killgate diff` checks of a file against the running gateway's status, beyond the
config's own differences: kills the file would route around or revive, and whether the
gateway's reload would refuse it (a version an override serves dropped, a latched route
renamed or dropped, a version name given another artifact).

Owns `kills_by_routing` and `latched_routes`, over the admin API's `/v1/status` answer (read by
cli/configtools.py); whether the reload would refuse the file is the gateway's own decision
(domain/reloadcheck.reload_problems) over the facts status shows (`status_facts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.cli.client import ClientError

if TYPE_CHECKING:
    from gateway.domain.reloadcheck import ReloadFacts
    from gateway.domain.statedoc import RouteOverride

__all__ = ["artifacts", "kills_by_routing", "latched_routes", "status_facts"]


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


def latched_routes(status: dict[str, Any], loaded: Any) -> list[str]:
    """The routes of the running gateway a runtime override latches; a ConfigError when
    its reload of `loaded` would be refused: the gateway's own decision
    (domain/reloadcheck.reload_problems) over the facts its `/v1/status` answer shows (its
    overrides, routed or not, which of them an open drill's restore undoes, the artifacts
    of its versions and history)."""
    from gateway.domain.reloadcheck import reload_problems
    from gateway.errors import ConfigError, Problem

    facts = status_facts(status)
    problems = reload_problems(facts, list(loaded.config.routes))
    if problems:
        raise ConfigError([Problem(p, "the running gateway would refuse it: " + m)
                           for p, m in problems])
    routed = set(facts.running or ())
    return sorted(n for n in facts.overrides if n in routed)


def status_facts(status: dict[str, Any]) -> ReloadFacts:
    """The `ReloadFacts` of a running gateway, read from its `/v1/status` answer. An
    override whose `drill` is missing (a gateway from before it was shown) counts as an
    operator's: diff then says "would refuse" where that gateway might not."""
    from gateway.domain.reloadcheck import ReloadFacts

    routes = status["routes"]
    overrides, drill_only = {}, set()
    unrouted = status.get("overrides_unrouted")
    rows = [(name, r.get("override") if isinstance(r, dict) else None)
            for name, r in routes.items()]
    rows += [(str(u.get("route")), u) for u in (unrouted if isinstance(unrouted, list) else ())
             if isinstance(u, dict)]
    for name, ov in rows:
        if not isinstance(ov, dict):
            continue
        overrides[name] = _override(name, ov)
        drill = ov.get("drill")
        if isinstance(drill, dict) and drill.get("over_latch") is False:
            drill_only.add(name)
    return ReloadFacts(overrides, frozenset(drill_only), _identities(status), tuple(routes))


def _identities(status: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The artifacts the gateway knows: its record (`identities`), and its running versions'
    where the record names none (droppedlatch.with_running); from a gateway from before
    status showed the record, its versions' and its history's."""
    routes, recorded = status["routes"], status.get("identities")
    if not isinstance(recorded, dict):
        return {name: artifacts(r) for name, r in routes.items()}
    out = {str(r): {str(v): dict(rec) for v, rec in vs.items() if isinstance(rec, dict)}
           for r, vs in recorded.items() if isinstance(vs, dict)}
    for name, r in routes.items():
        for v, rec in artifacts(r, history=False).items():
            known = out.setdefault(name, {})
            if not (known.get(v) or {}).get("artifact"):
                known[v] = rec
    return out


def _override(name: str, ov: dict[str, Any]) -> RouteOverride:
    from gateway.domain.statedoc import RouteOverride

    try:
        return RouteOverride(
            ov.get("stable"), {str(k): float(w) for k, w in ov["weights"].items()},
            str(ov.get("actor")), str(ov.get("reason")), str(ov.get("time")),
            str(ov.get("kind")))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ClientError(f"unexpected answer from the admin API: the override of "
                          f"route {name!r}") from None


def artifacts(route: Any, history: bool = True) -> dict[str, dict[str, Any]]:
    """Version name -> the artifact a running gateway's status shows it with (its
    config's, then its history's), as identity records."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(route, dict):
        return out
    past = route.get("history") if history else None
    for h in past if isinstance(past, list) else ():
        if isinstance(h, dict) and isinstance(h.get("stable"), str) \
                and isinstance(h.get("artifact"), str) and h["artifact"]:
            out[h["stable"]] = {"artifact": h["artifact"], "time": h.get("time")}
    versions = route.get("versions")
    for name, v in (versions.items() if isinstance(versions, dict) else ()):
        if isinstance(v, dict) and isinstance(v.get("artifact"), str) and v["artifact"]:
            out[str(name)] = {"artifact": v["artifact"]}
    return out
