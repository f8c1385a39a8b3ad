"""The routing snapshot: every route's plan, most specific first, and the match of a
request to its route.

Owns `RouteTable` (immutable: replaced as a whole on any change, built by
domain/tablebuild.py; a request reads it once and keeps it to the end). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain.routing import RoutePlan
from gateway.domain.statedoc import StateDoc

__all__ = ["RouteTable"]


class RouteTable:
    """All routes, most specific first. Immutable; replaced as a whole on any change."""

    __slots__ = ("by_name", "doc", "generation", "model_routes", "routes", "unhealthy")

    def __init__(self, plans: list[RoutePlan], doc: StateDoc,
                 unhealthy: frozenset[tuple[str, str]]) -> None:
        plans.sort(key=lambda p: (-(len(p.prefix) if p.prefix else -1), -p.match_keys))
        self.routes = tuple(plans)
        self.by_name = {p.name: p for p in plans}
        self.model_routes = any(p.model is not None for p in plans)
        self.doc = doc
        self.generation = doc.generation
        self.unhealthy = unhealthy

    def needs_model(self, path: str, host: str, headers: Mapping[str, str]) -> bool:
        """Whether the body's `model` could change which route matches this request."""
        if not self.model_routes:
            return False
        return any(p.model is not None and p.matches(path, host, headers, p.model) for p in self.routes)

    def match(self, path: str, host: str, headers: Mapping[str, str],
              model: str | None) -> RoutePlan | None:
        for p in self.routes:
            if p.matches(path, host, headers, model):
                return p
        return None
