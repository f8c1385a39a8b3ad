"""What a drill's open asks for (POST /v1/drills): its kind, version, production flag and
duration, each checked.

Owns `open_input`: an unknown kind, a version that is no name, a `production` that is no
boolean or a `duration` that does not parse or is past drills.max_duration are 400s; a
route that serves users opened without `"production": true` is a 409 production_route.
Pure: the request's body and the route's config in, no state read.
"""

from __future__ import annotations

from typing import Any

from gateway.config import RouteConfig, parse_duration
from gateway.domain import drills
from gateway.errors import ApiError

__all__ = ["open_input"]


def open_input(body: dict[str, Any], rc: RouteConfig,
               limit: float) -> tuple[str, str | None, float]:
    """(kind, version, duration in seconds: `limit` when not asked) of an open on `rc`."""
    kind = body.get("kind")
    if kind not in drills.KINDS:
        raise ApiError(400, "bad_request", f"'kind' must be one of {', '.join(drills.KINDS)}")
    version = body.get("version")
    if version is not None and (not isinstance(version, str) or not version):
        raise ApiError(400, "bad_request", "'version' must be a version name")
    production = body.get("production", False)
    if not isinstance(production, bool):
        raise ApiError(400, "bad_request", "'production' must be true or false")
    if rc.drill_for is None and not production:
        raise ApiError(409, "production_route",
                       f"route {rc.name!r} serves users (it is not a drill route): pass "
                       "\"production\": true to drill on it, or declare a drill route "
                       f"with drill_for: {rc.name}")
    duration = limit
    if body.get("duration") is not None:
        try:
            duration = parse_duration(body["duration"])
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"'duration': {exc}") from None
        if not 0 < duration <= limit:
            raise ApiError(400, "bad_request", f"'duration' must be > 0 and at most "
                                               f"{limit:g}s (drills.max_duration)")
    return str(kind), version, duration
