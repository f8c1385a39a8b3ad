"""The instances a drill opened with: recorded in its `drill.start` audit event (`after.
instances`: name → the admin address each published, "" for none) and given back by its
restore (`started_with`), so that `killgate drill restore` run after the drill's process
died asks each of them whether it applied the restore, as the drill's own end does
(control/drillbehind.py). Without it only the instances still heartbeating were asked: one
cut off from the store drops out of the fleet once its lease runs out, while it enforces
the drill's kill.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.drillsupport import drill_events
from gateway.admin.ports import AuditReader, FleetView
from gateway.errors_store import StateError

__all__ = ["MAX_RECORDED", "live_addresses", "started_with"]

#: instances recorded at most (a drill.start event stays a bounded size)
MAX_RECORDED = 500


async def live_addresses(fleet: FleetView | None) -> dict[str, str]:
    """The live instances and the admin address each published; {} when the store cannot
    say (the drill opens all the same: its restore then asks those live at that time)."""
    if fleet is None:
        return {}
    try:
        live = await fleet.fleet()
    except StateError:
        return {}
    out: dict[str, str] = {}
    for name, info in sorted(live.items())[:MAX_RECORDED]:
        admin = info.get("admin") if isinstance(info, dict) else None
        out[name] = admin if isinstance(admin, str) else ""
    return out


async def started_with(audit: AuditReader, drill: str) -> dict[str, str]:
    """What `drill`'s genuine drill.start event recorded of its instances ({}: none)."""
    events = await drill_events(audit, lambda e: e.get("drill") == drill
                                and e.get("action") == "drill.start", 1)
    after: Any = events[0].get("after") if events else None
    raw = after.get("instances") if isinstance(after, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in list(raw.items())[:MAX_RECORDED]
            if isinstance(k, str) and isinstance(v, str)}
