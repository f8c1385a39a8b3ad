"""GET /v1/status answered from parts built once (CONTRACT §4 and its `fields`, `routes`).

With 1,000 routes building, redacting and serialising the document cost the admin loop
(which the data plane shares) a whole build per call (0.2-0.9 s on a loaded 2-core
machine: benchmarks/RESULTS.md §32), and every console asks every 3 s.
The parts are kept per (routing table, second): the table is swapped whole on every state
generation and every config reload (and on a health change that moves traffic), so a
kill is in the next answer; what changes without a swap (a canary's evidence, a probe's
error, an ejection's countdown) is at most one second old. A second's miss builds every
route's part again, but redacts, serialises and hashes again only the routes whose part
changed (with canaries running: those routes).

Each route's part carries its own tag (`?fields=index`: route -> tag), so a console
fetches only the routes whose tag changed (`?routes=a,b`). The store's status, the last
reload's outcome and the fleet are asked on every call, as before.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway import redact
from gateway.admin.status import StatusBuilder, stable
from gateway.domain.routetable import RouteTable
from gateway.errors import ApiError

__all__ = ["ROUTES_PARAM", "RoutePart", "StatusParts"]

#: `?routes=a,b` (a route's name is 1-64 of these characters: config_routes.py)
ROUTES_PARAM = r"[A-Za-z0-9_.\-]{1,64}(?:,[A-Za-z0-9_.\-]{1,64})*"


@dataclass(frozen=True, slots=True)
class RoutePart:
    live: tuple[Any, Any]  # what it was built from beside the table: health, analysis
    raw: dict[str, Any]  # as built (compared with the next table's)
    text: str  # `"name": {...}`, redacted, as it stands in the document
    tag: str  # 128 bits of BLAKE2b of `text`, hex


@dataclass(slots=True)
class _Built:
    table: RouteTable
    second: int
    head: dict[str, Any]  # redacted: instance, generation, kills, identities, ...
    routes: dict[str, RoutePart]
    joined: str | None = None  # every route's text, joined (made on first need)
    tags: str | None = None  # `{"name": "tag", ...}` (made on first need)
    last: tuple[str, str, bytes] | None = None  # the last whole answer: fields, top, bytes


def _part(name: str, live: tuple[Any, Any], raw: dict[str, Any]) -> RoutePart:
    # (redacted under its own name, as in the whole document: a route named `webhooks`
    # hides the paths below it there too)
    text = json.dumps(name) + ": " + json.dumps(redact.tree({name: raw})[name])
    return RoutePart(live, raw, text, hashlib.blake2b(text.encode(), digest_size=16).hexdigest())


class StatusParts:
    """The status document's parts for the table in force, kept for up to a second."""

    def __init__(self, builder: StatusBuilder,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.builder = builder
        self.clock = clock
        self._built: _Built | None = None
        self.builds = 0  # (how many times the parts were built: tests, benchmarks)

    def parts(self) -> _Built:
        table = self.builder.routing.table
        second = int(self.clock())
        was = self._built
        if was is not None and was.table is table and was.second == second:
            return was
        self.builds += 1
        b = self.builder
        health = b.health() if b.health is not None else {}
        routes: dict[str, RoutePart] = {}
        same = was is not None and was.table is table
        for plan in table.routes:
            name = plan.config.name
            # (the table the same, a route's part changes only with its health and analysis)
            live = (tuple(health.get((name, v.name)) for v in plan.config.versions)
                    if health else None, b.analysis(name) if b.analysis is not None else None)
            old = was.routes.get(name) if was is not None else None
            if old is not None and same and old.live == live:
                routes[name] = old
                continue
            raw = b.route(table, plan, health)
            routes[name] = (RoutePart(live, raw, old.text, old.tag)
                            if old is not None and old.raw == raw else _part(name, live, raw))
        head = was.head if was is not None and same else redact.tree(b.head(table))
        self._built = _Built(table, second, head, routes)
        return self._built

    def chosen(self, names: str) -> list[str]:
        """`?routes=a,b` (checked against ROUTES_PARAM): each name once, in the order
        named; a name the table in force lacks is a 404 (a reload may have dropped it)."""
        out = list(dict.fromkeys(names.split(",")))
        known = self.parts().routes
        lacking = [n for n in out if n not in known]
        if lacking:
            more = f" (and {len(lacking) - 5} more)" if len(lacking) > 5 else ""
            raise ApiError(404, "unknown_route", "no route named " + ", ".join(
                repr(n) for n in lacking[:5]) + more + " on this instance (a reload may "
                "have dropped it): ask ?fields=index again for the routes there are")
        return out

    def body(self, fields: str, instances: Any, only: list[str] | None = None) -> bytes:
        """The answer's bytes: `fields` all, stable or index; `only`: these routes (names
        the table has, each once: the caller checked), else every route."""
        built = self.parts()
        b = self.builder
        live = {"store": b.store() if b.store is not None else None,
                "config": b.config_status(), "instances": instances}
        top = {**built.head, **redact.tree(stable(live) if fields != "all" else live)}
        head = json.dumps(top)
        if only is None and built.last is not None and built.last[:2] == (fields, head):
            return built.last[2]  # (another console's call this second: the same bytes)
        chosen = [] if only is None else [(n, built.routes[n]) for n in only]
        if fields == "index":
            tail = '"route_etags": ' + (self._tags(built) if only is None else _tags(chosen))
        elif only is None:
            if built.joined is None:
                built.joined = ", ".join(p.text for p in built.routes.values())
            tail = '"routes": {' + built.joined + "}"
        else:
            tail = ('"routes": {' + ", ".join(p.text for _, p in chosen) + '}, '
                    '"route_etags": ' + _tags(chosen))
        body = (head[:-1] + ", " + tail + "}").encode()
        if only is None:
            built.last = (fields, head, body)
        return body

    def _tags(self, built: _Built) -> str:
        if built.tags is None:
            built.tags = _tags(built.routes.items())
        return built.tags


def _tags(pairs: Iterable[tuple[str, RoutePart]]) -> str:
    return json.dumps({name: part.tag for name, part in pairs})
