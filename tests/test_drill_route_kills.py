"""A drill route (`drill_for`) serves its production route's versions behind a match any
client can send (a header): a kill of the production route, or of one of its versions,
holds on the drill route too (ninth hostile review: a client adding
`x-killgate-drill-route: 1` was served by the killed route's backends, and pinned the killed
version). A drill's own kill of the drill route leaves production alone."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from gateway.configfile import parse_config_text
from gateway.domain.kills import covering
from gateway.domain.statedoc import KillFlag, RouteOverride, StateDoc, kill_key
from gateway.domain.tablebuild import build_table, rebuild_table
from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, write_config
from tests.test_killswitch import auth
from tests.test_proxy_confusion import _raw

pytestmark = pytest.mark.timeout(30)


def _routes(p1: int, p2: int) -> str:
    versions = (f'[{{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}, '
                f'{{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}]')
    return textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions: {versions}
        - name: iris-drill
          drill_for: iris
          match: {{path_prefix: /v2/models/iris, header: {{x-killgate-drill-route: "1"}}}}
          stable: v1
          allow_pin: true
          versions: {versions}
        """)


def _flag(scope: str, route: str, version: str | None = None) -> dict[str, KillFlag]:
    return {kill_key(scope, route, version): KillFlag(scope, route, version, "a", "r", "t", 1)}


def test_the_production_routes_kills_hold_on_its_drill_route() -> None:
    cfg = parse_config_text("routes:\n" + textwrap.indent(_routes(1, 2), "  "))
    base = build_table(cfg, StateDoc())
    for kills in (_flag("route", "iris"), _flag("version", "iris", "v2")):
        doc = StateDoc(kills=kills)
        for table in (build_table(cfg, doc), rebuild_table(base, cfg, doc)):
            drill = table.by_name["iris-drill"]
            choice = drill.choose(None, "v2", random.random)
            assert choice.target is None or choice.target.name != "v2", kills
            assert drill.killed == ("route" if "route:iris" in kills else None)
    # the drill's own kill stays on the drill route
    table = build_table(cfg, StateDoc(kills=_flag("route", "iris-drill")))
    assert table.by_name["iris"].killed is None


async def test_a_killed_route_is_not_served_through_its_drill_route(
        tmp_path: Path, backends, session) -> None:
    r1, r2 = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", r1)), await backends(echo_app("v2", r2))
    cfg = write_config(tmp_path, _routes(p1, p2))
    async with running_gateway(cfg) as g:
        port = g.gw.data_addr[1]
        drill = b"x-killgate-drill-route: 1\r\nx-killgate-pin: v2\r\n"
        async with session.post(f"{g.admin}/v1/kill", headers=auth(), json={
                "scope": "version", "route": "iris", "version": "v2", "reason": "t"}) as r:
            assert r.status == 200, await r.text()
        got, data = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                               + drill + b"Connection: close\r\n\r\n")
        assert got == 200 and b"x-killgate-version: v1" in data.lower(), data[:300]
        assert not r2.requests and len(r1.requests) == 1  # (the pin failed over)
        async with session.post(f"{g.admin}/v1/kill", headers=auth(), json={
                "scope": "route", "route": "iris", "reason": "t"}) as r:
            assert r.status == 200, await r.text()
        got, data = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                               + drill + b"Connection: close\r\n\r\n")
        assert got == 503 and b"killed" in data, data[:300]
        assert len(r1.requests) == 1 and not r2.requests


def test_a_kill_of_the_production_route_covers_exchanges_on_its_drill_route() -> None:
    """What in-flight answers a new kill cuts (abort_inflight): those on the drill route too."""
    for key, scope in (("route:iris", "route"), ("version:iris:v2", "version")):
        keys = frozenset({key})
        assert covering(keys, "iris-drill", "v2", "iris") == scope
        assert covering(keys, "iris-drill", "v2") is None  # (a route that drills nothing)
    assert covering(frozenset({"route:iris-drill"}), "iris", "v2") is None


def test_a_version_rolled_back_on_the_production_route_is_not_pinned_through_its_drill_route(
        ) -> None:
    """A latched rollback takes the version out of the production route's pins (issue 13);
    the drill route, which any client can reach, must not pin it either."""
    cfg = parse_config_text("routes:\n" + textwrap.indent(_routes(1, 2), "  "))
    base = build_table(cfg, StateDoc())
    assert base.by_name["iris-drill"].choose(None, "v2", random.random).target.name == "v2"
    rolled = StateDoc(overrides={"iris": RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "a",
                                                       "r", "t", "auto_rollback")})
    for table in (build_table(cfg, rolled), rebuild_table(base, cfg, rolled)):
        choice = table.by_name["iris-drill"].choose(None, "v2", random.random)
        assert choice.target is not None and choice.target.name == "v1", choice
