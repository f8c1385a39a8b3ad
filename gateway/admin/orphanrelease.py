"""`release` of a route the config in force does not have, while the state latches an
override on it (an orphan): a file that dropped or renamed the route went live on an
instance that started on it (a start is not refused for that), or on one whose state
latched the route after its reload. The override cannot serve there, stays invisible, and
comes back in force, months old, when a file names the route again: a re-added route
without the old versions is then refused ("run `killgate release ROUTE` first"), and the
release must not answer 404 `unknown_route`. It drops the override (and the route's
progressive rollout state); nothing else. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import ConflictingState

__all__ = ["before", "change"]


def change(route: str) -> Callable[[StateDoc], Change]:
    def make(cur: StateDoc) -> Change:
        if route not in cur.overrides:
            raise ConflictingState("not_latched", f"route {route!r} has no runtime override")
        return Change(overrides={route: None},
                      progress={route: None} if route in cur.progress else {})
    return make


def before(cur: StateDoc, route: str) -> dict[str, Any]:
    """The override as the audit event's `before` shows one (admin/actions.py)."""
    ov = cur.overrides.get(route)
    if ov is None:
        return {"latched": False, "stable": None}
    return {"latched": True, "kind": ov.kind, "stable": ov.stable, "weights": ov.weights,
            "in_config": False}
