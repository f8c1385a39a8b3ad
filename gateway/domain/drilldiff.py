"""What differs between the route state a drill recorded when it opened and the one its
restore left (`drills.route_state`), in words: the reasons of a drill whose fleet is not
as before, so that nobody has to diff two JSON objects at 3 a.m. to learn which kill,
latch or weight it is, nor takes someone else's real kill for the drill's leftover.
Pure; no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = ["differences"]


def differences(before: Any, after: Any, pending: list[str]) -> list[str]:
    """Each difference, and the instances that have not applied the restore."""
    out: list[str] = []
    if pending:
        out.append(f"the restore is not applied yet by {len(pending)} instance(s): "
                   f"{', '.join(map(str, pending[:5]))}{', ...' if len(pending) > 5 else ''}")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return out
    was, now = set(before.get("kills") or ()), set(after.get("kills") or ())
    if now - was:
        out.append(f"killed now, not before the drill: {', '.join(sorted(now - was))} (a "
                   "kill made during the drill, by someone else: it stays; see killgate "
                   "status)")
    if was - now:
        out.append(f"killed before the drill, not now: {', '.join(sorted(was - now))} "
                   "(lifted during the drill, by someone else)")
    for field in ("latched", "override", "stable", "weights", "progress", "faults"):
        if before.get(field) != after.get(field):
            out.append(f"{field} was {before.get(field)!r}, is {after.get(field)!r}")
    return out
