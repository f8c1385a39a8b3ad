"""The shadow promotion gate on admin writes (CONTRACT §5.5): a route write that would
give a route's shadow traffic while the fleet's agreement is below
`analysis.min_shadow_agreement` is refused (409 `shadow_agreement`), whether written
directly, by break-glass, or applied by the approval that completes a two-person request.

Owns reading the gates (through the ShadowGate port, before the write) and the refusal,
decided on the document the change is applied to (a DomainError: re-checked on the
store's copy when ours was stale). Foundations, domain and admin/ports only.
"""

from __future__ import annotations

from gateway.admin.actions import Intent
from gateway.admin.ports import Change as ChangeFn
from gateway.admin.ports import ChangeCheck, Current, ShadowGate
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import DomainError

__all__ = ["ROUTE_ACTIONS", "ShadowChecks", "ShadowRefused"]

#: the writes that move a route's traffic (a kill or unkill never gives a shadow traffic)
ROUTE_ACTIONS = frozenset({"rollback", "promote", "weights", "release"})
Checks = dict[str, ChangeCheck]


class ShadowRefused(DomainError):
    def __init__(self, why: str) -> None:
        super().__init__("shadow_agreement", why)


def route_of(intent: Intent) -> str | None:
    """The route whose traffic the intent moves (None: a kill or unkill)."""
    route = intent.target.get("route")
    return route if intent.action in ROUTE_ACTIONS and isinstance(route, str) else None


def refuse(checks: Checks, route: str | None, cur: StateDoc, change: Change | None) -> None:
    """Raise ShadowRefused when `change` to `cur` is one the gate of `route` refuses."""
    check = checks.get(route) if route is not None else None
    if check is not None and change is not None and (why := check(cur, change)) is not None:
        raise ShadowRefused(why)


class ShadowChecks:
    def __init__(self, gate: ShadowGate | None, current: Current) -> None:
        self.gate = gate
        self.current = current

    async def read(self, route: str | None) -> Checks:
        """The gates in force, read fresh: for `route`, or (None) for every route (an
        approval's record is read inside the write, so its route is not known before)."""
        if self.gate is None:
            return {}
        cfg = self.current.loaded.config
        rc = cfg.route(route) if route is not None else None
        routes = list(cfg.routes) if route is None else [rc] if rc is not None else []
        out: Checks = {}
        for rc in routes:
            check = await self.gate.gate_for(rc)
            if check is not None:
                out[rc.name] = check
        return out

    async def wrap(self, route: str | None, change: ChangeFn) -> ChangeFn:
        """`change` to `route`, refused when its gate says so (None: a write that moves no
        route's traffic, returned as it is)."""
        if route is None:
            return change
        checks = await self.read(route)
        if not checks:
            return change

        def checked(cur: StateDoc) -> Change | None:
            ch = change(cur)
            refuse(checks, route, cur, ch)
            return ch

        return checked
