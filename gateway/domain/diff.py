"""What a config change would change, per route: the review tool for a pull request.

Pure: compares two configs as plain JSON-shaped dicts (so a file on disk and the config a
running gateway reports through GET /v1/config compare the same way). Reports added and
removed routes and versions, weight changes, and changes of every other route setting
(stable, match, health, fallback, timeouts, retry, sticky, pins, analysis, protocol,
shadow, urls, artifacts), plus top-level sections.
"""

from __future__ import annotations

from typing import Any

from gateway import redact
from gateway.config import Config
from gateway.configfile import RESTART_ONLY

__all__ = ["at_restart", "config_dict", "diff_configs", "diff_rows", "restart_keys"]

_ROUTE_SETTINGS = ("stable", "match", "sticky", "allow_pin", "health", "fallback", "timeouts",
                   "retry", "analysis", "protocol", "shadow")
_VERSION_SETTINGS = ("url", "artifact", "model")


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as JSON, with its secrets redacted (gateway/redact.py): what GET
    /v1/config answers, `killgate diff` compares and a reload's audit event records."""
    out: dict[str, Any] = redact.tree(cfg.model_dump(mode="json", by_alias=True))
    return out


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"routes": {}, "settings": {}}
    for key in sorted(set(old) | set(new)):
        if key != "routes" and old.get(key) != new.get(key):
            out["settings"][key] = [old.get(key), new.get(key)]
    a = {r["name"]: r for r in old.get("routes", [])}
    b = {r["name"]: r for r in new.get("routes", [])}
    for name in sorted(set(a) | set(b)):
        if name not in b:
            out["routes"][name] = {"status": "removed"}
            continue
        if name not in a:
            out["routes"][name] = {"status": "added",
                                   "weights": {v["name"]: [None, v["weight"]]
                                               for v in b[name]["versions"]}}
            continue
        change = _route_diff(a[name], b[name])
        if change:
            out["routes"][name] = {"status": "changed", **change}
    return out


def _route_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    va = {v["name"]: v for v in a["versions"]}
    vb = {v["name"]: v for v in b["versions"]}
    added = sorted(set(vb) - set(va))
    removed = sorted(set(va) - set(vb))
    if added:
        out["versions_added"] = added
    if removed:
        out["versions_removed"] = removed
    weights = {n: [va.get(n, {}).get("weight"), vb.get(n, {}).get("weight")]
               for n in sorted(set(va) | set(vb))
               if va.get(n, {}).get("weight") != vb.get(n, {}).get("weight")}
    if weights:
        out["weights"] = weights
    settings = {k: [a.get(k), b.get(k)] for k in _ROUTE_SETTINGS if a.get(k) != b.get(k)}
    for n in sorted(set(va) & set(vb)):
        for k in _VERSION_SETTINGS:
            if va[n].get(k) != vb[n].get(k):
                settings[f"versions.{n}.{k}"] = [va[n].get(k), vb[n].get(k)]
    if settings:
        out["settings"] = settings
    return out


def _leaves(key: str, x: Any, y: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, before, after) of each value that differs under two settings: a nested
    setting is shown where it changed (its start, cut, is often the same on both sides:
    `shadow` with only its compare tolerance changed looked unchanged)."""
    if not isinstance(x, dict) or not isinstance(y, dict):
        return [(key, x, y)]
    out: list[tuple[str, Any, Any]] = []
    for k in [*x, *(k for k in y if k not in x)]:
        if x.get(k) != y.get(k):
            out += _leaves(f"{key}.{k}", x.get(k), y.get(k))
    return out


def at_restart(key: str) -> bool:
    """Whether a top-level setting `key` (dotted, as diff_rows shows it) is one a reload
    leaves as the process started: it changes nothing until a restart."""
    return any(key == k or key.startswith(k + ".") for k in RESTART_ONLY)


def restart_keys(d: dict[str, Any]) -> list[str]:
    """The changed top-level settings of a diff that apply only at a restart."""
    return [k for key, (x, y) in d.get("settings", {}).items()
            for k, _, _ in _leaves(key, x, y) if at_restart(k)]


def diff_rows(d: dict[str, Any]) -> list[list[str]]:
    """A readable table: route, what, before, after (a setting that applies only at a
    restart says so)."""
    rows: list[list[str]] = []
    for key, (x, y) in d.get("settings", {}).items():
        rows += [["(top)", k + (" (at restart)" if at_restart(k) else ""), _short(a), _short(b)]
                 for k, a, b in _leaves(key, x, y)]
    for name, r in d.get("routes", {}).items():
        if r["status"] == "removed":
            rows.append([name, "route removed", "", ""])
            continue
        if r["status"] == "added":
            rows.append([name, "route added", "", ""])
        for v in r.get("versions_added", []):
            rows.append([name, f"version {v} added", "", ""])
        for v in r.get("versions_removed", []):
            rows.append([name, f"version {v} removed", "", ""])
        for v, (x, y) in r.get("weights", {}).items():
            rows.append([name, f"weight {v}", _short(x), _short(y)])
        for key, (x, y) in r.get("settings", {}).items():
            rows += [[name, k, _short(a), _short(b)] for k, a, b in _leaves(key, x, y)]
    return rows


def _short(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."
