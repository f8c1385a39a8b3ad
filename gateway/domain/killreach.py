"""Kills a config change may route around while keeping their names.

`kills.unrouted` finds the kills whose route or version a config drops or renames. A file
can also move a kill's traffic without touching the name: a route it adds (or re-matches)
that takes requests the killed route matched (a more specific `iris-premium` beside a
killed `iris`), the killed route's own match changed, or the killed version's backend put
under another version name. `killgate diff` names those before the merge. Pure: works on
configs as `domain.diff.config_dict` renders them (the running gateway's GET /v1/config,
or a file), and on the kills as GET /v1/status lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["kills_routed_around", "may_overlap"]


def may_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two routes' `match` (as dicts) can both match one request (a conservative
    answer: case folding and prefixes only widen it)."""
    pa, pb = a.get("path_prefix"), b.get("path_prefix")
    if isinstance(pa, str) and isinstance(pb, str):
        fa, fb = pa.casefold(), pb.casefold()
        if not (fa.startswith(fb) or fb.startswith(fa)):
            return False
    for key in ("host", "model"):
        if a.get(key) and b.get(key) and a[key] != b[key]:
            return False
    ha, hb = a.get("header") or {}, b.get("header") or {}
    return not any(k in hb and hb[k] != v for k, v in ha.items())


def kills_routed_around(kills: Iterable[Mapping[str, Any]], running: Iterable[Mapping[str, Any]],
                        new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The route and version kills in force, on names both configs have, whose traffic the
    `new` routes may serve: {"kill", "by", "reason", "how"} each. (A route less specific
    than the killed one takes none of its requests while the killed one's match stays.)"""
    old = {r.get("name"): r for r in running}
    routes = list(new)
    mine = {r.get("name"): r for r in routes}
    keys = {_key(k) for k in kills}
    out = []
    for k in kills:
        scope, route, version = k.get("scope"), k.get("route"), k.get("version")
        if scope not in ("route", "version") or route not in old or route not in mine:
            continue  # (a name the file drops: kills.unrouted's, said apart)
        how: list[str] = []
        if scope == "route":
            before = old[route].get("match") or {}
            if (mine[route].get("match") or {}) != before:
                how.append(f"route {route}'s match changes")
            for r in routes:
                name = r.get("name")
                if name == route or r.get("drill_for") == route or "global" in keys \
                        or f"route:{name}" in keys:
                    continue
                changed = name not in old or old[name].get("match") != r.get("match")
                if changed and may_overlap(r.get("match") or {}, before) \
                        and _rank(r.get("match") or {}) > _rank(before):
                    how.append(f"route {name} ({'added' if name not in old else 'its match changes'}) "
                               f"can take its requests")
        else:
            url = next((v.get("url") for v in old[route].get("versions", ())
                        if v.get("name") == version), None)
            for r in routes:
                if r.get("drill_for") == route:
                    continue  # (the production route's kills hold on its drill route)
                was = {v.get("name"): v.get("url") for v in old.get(r.get("name"), {}).get(
                    "versions", ())}
                for v in r.get("versions", ()):
                    n = (r.get("name"), v.get("name"))
                    if url is None or v.get("url") != url or n == (route, version) \
                            or was.get(n[1]) == url \
                            or {"global", f"route:{n[0]}", f"version:{n[0]}:{n[1]}"} & keys:
                        continue  # (one that had this backend already: not this file's)
                    how.append(f"its backend {url} is version {n[1]} of route {n[0]}")
        if how:
            out.append({"kill": _key(k), "by": str(k.get("actor")), "reason": str(k.get("reason")),
                        "how": how})
    return out


def _rank(match: Mapping[str, Any]) -> tuple[int, int]:
    """How specific a match is (routing: the longest path_prefix, then the most keys): a
    route takes a request another one also matches only when it ranks higher."""
    prefix = match.get("path_prefix")
    keys = sum(match.get(k) is not None for k in ("path_prefix", "host", "header", "model"))
    return (len(prefix) if isinstance(prefix, str) else 0, keys)


def _key(k: Mapping[str, Any]) -> str:
    scope = k.get("scope")
    if scope == "global":
        return "global"
    return f"{scope}:{k.get('route')}" + (f":{k.get('version')}" if scope == "version" else "")
