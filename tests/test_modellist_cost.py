"""The model listing (modellist.py) answers any client's `GET /v1/models` on the event
loop: its cost must grow with the routes, not with their square. Pure."""

from __future__ import annotations

import json
import time

from gateway.configfile import parse_config_text
from gateway.domain.modellist import model_listing
from gateway.domain.routetable import RouteTable
from gateway.domain.statedoc import StateDoc
from gateway.domain.tablebuild import build_table


def _table(routes: str) -> RouteTable:
    return build_table(parse_config_text(f"""
listen: 127.0.0.1:8080
admin: {{listen: 127.0.0.1:9901}}
state: {{backend: local, path: /tmp/x.json}}
routes:
{routes}
"""), StateDoc())


def _route(name: str, match: str) -> str:
    return f"""  - name: {name}
    match: {{{match}}}
    stable: v1
    versions:
      - {{name: v1, url: "http://10.0.0.1:9000"}}"""


class _Counted(dict[str, str]):
    """Request headers that count the lookups: one per route a match looks at."""

    looked = 0

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.looked += 1
        return super().get(key, default)


def test_listing_many_model_routes_looks_at_each_route_once() -> None:
    """Review of the revmerge19 merge: each route's model was looked up with a whole
    `match` over the routes, 0.4 s of the event loop per request with 1,000 model routes
    (every other request of the instance waited). One pass now."""
    n = 500
    table = _table("\n".join(
        _route(f"m{i}", f"path_prefix: /v1, model: model-{i}, header: {{x-team: red}}")
        for i in range(n)))
    headers = _Counted({"x-team": "red"})
    started = time.perf_counter()
    listing = model_listing(table, "/v1/models", "h", headers)
    took = time.perf_counter() - started
    assert listing is not None and listing.body is not None
    assert [m["id"] for m in json.loads(listing.body)["data"]] == [f"model-{i}" for i in range(n)]
    assert headers.looked <= n, headers.looked  # (a match per route: n * (n + 1) / 2)
    assert took < 0.2, took


def test_listing_is_what_match_would_route() -> None:
    """The one pass lists the models `match` would send to a route taking that model: the
    first route for a model (a header-matched one only with the header), none past a route
    that takes any model."""
    table = _table("\n".join([
        _route("a-hdr", 'path_prefix: /v1, model: a, header: {x-team: red}'),
        _route("a", "path_prefix: /v1, model: a"),
        _route("b-hdr", 'path_prefix: /v1, model: b, header: {x-team: red}'),
        _route("c", "path_prefix: /v1/, model: c"),
        _route("other", "path_prefix: /v2, model: d"),
    ]))
    for headers in ({}, {"x-team": "red"}, {"x-team": "blue"}):
        listing = model_listing(table, "/v1/models", "h", headers)
        assert listing is not None and listing.body is not None
        got = [m["id"] for m in json.loads(listing.body)["data"]]
        want = [p.model for p in table.routes if p.model is not None
                and table.match("/v1/models", "h", headers, p.model) is p]
        assert got == want and "d" not in got
        assert ("b" in got) == (headers.get("x-team") == "red")
