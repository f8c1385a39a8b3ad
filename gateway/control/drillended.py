"""A drill ended while it ran, by someone else: `killgate drill restore` from another
terminal (the 409 drill_in_progress names it), or the fleet closing it past its deadline
(drills.auto_restore_after). Owns finding its end, and when it was restored, through the
admin API (GET /v1/drills, GET /v1/audit: scope killgate:read), for the runner to report
that instead of a failed restore and the answers after it as leaks.
"""

from __future__ import annotations

from typing import Any

from gateway.control.drillload import AdminClient, DrillApiError

__all__ = ["ended"]


async def ended(api: AdminClient, drill: str) -> dict[str, Any] | None:
    """The drill.end event of `drill` among the last drills ended (None: not there, or
    the history cannot be read)."""
    try:
        got = await api.call("GET", "/v1/drills?limit=200")
    except DrillApiError:
        return None
    history = got.get("history")
    end = next((e for e in history if isinstance(e, dict) and isinstance(e.get("target"), dict)
                and e["target"].get("drill") == drill), None) \
        if isinstance(history, list) else None
    if end is None:
        return None
    # when it was restored: `drill restore` restores first, then ends (the fleet does both
    # in one write)
    try:
        events = (await api.call("GET", "/v1/audit?limit=200")).get("events")
    except DrillApiError:
        events = None
    restored = next((e for e in events if isinstance(e, dict) and e.get("drill") == drill
                     and e.get("action") == "drill.restore"), None) \
        if isinstance(events, list) else None
    return {**end, "restored_at": (restored or end).get("time")}
