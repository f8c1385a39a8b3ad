"""Cells of `killgate status`'s ROUTES table that say more than the JSON's flags: why a
version is out (`healthy_cell`), and the route's shadow in the stable column (`shadow_cell`).
Pure functions of the `/v1/status` answer."""

from __future__ import annotations

from typing import Any

__all__ = ["healthy_cell", "shadow_cell"]


def healthy_cell(v: dict[str, Any]) -> str:
    """The healthy column: why a version is out, when it is (a bare "NO" on a route with no
    health checks, its version ejected for its answers, sent the reader looking for a probe
    that did not exist: found by revnewuser9)."""
    if v.get("healthy"):
        return "yes"
    h = v.get("health")
    if not isinstance(h, dict):
        return "NO"
    left = h.get("ejected_for_s")
    if isinstance(left, (int, float)) and left > 0:
        cause = h.get("ejected_cause")  # (absent from an instance before it: a fleet mid-upgrade)
        why = f"ejected for {cause}" if isinstance(cause, str) and cause else "ejected"
        return f"NO ({why}, {left:.0f}s left)"
    if h.get("probe_healthy") is False:
        return "NO (health checks)"
    return "NO"


def shadow_cell(r: dict[str, Any], vname: str, v: dict[str, Any]) -> str:
    """The route's shadow, in the stable column: it answers no client (a copy of the
    stable's requests, compared): `shadow`, or why it gets no copies now; read as an idle
    version of weight 0, it looked ready to promote."""
    sh = r.get("shadow")
    if not isinstance(sh, dict) or sh.get("version") != vname or v.get("effective_weight"):
        return ""
    return "shadow" if sh.get("mirroring") else f"shadow (off: {sh.get('off')})"
