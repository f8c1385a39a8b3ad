"""A drill route (`drill_for`) declares its production route's versions, the shadow among
them, and `allow_pin: true` (drills pin the version they drill), behind a match any client
can send. On the production route a shadow is never pinnable (it never answers a client);
through the drill route a client pinned it and got the shadow's answer. A version that is
its production route's shadow is not pinnable on the drill route either, while it is a
shadow there (once given traffic on the production route, it is a canary like any)."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.configfile import parse_config_text
from gateway.domain.statedoc import RouteOverride, StateDoc
from gateway.domain.tablebuild import build_table, rebuild_table
from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(30)


def _routes(p1: int, p3: int) -> str:
    versions = (f'[{{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}, '
                f'{{name: v3, url: "http://127.0.0.1:{p3}", weight: 0}}]')
    return textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          allow_pin: true
          shadow: {{version: v3, sample: 0.0}}
          versions: {versions}
        - name: iris-drill
          drill_for: iris
          match: {{path_prefix: /v2/models/iris, header: {{x-killgate-drill-route: "1"}}}}
          stable: v1
          allow_pin: true
          versions: {versions}
        """)


async def test_a_client_cannot_pin_the_shadow_through_the_drill_route(
        tmp_path: Path, backends, session: ClientSession) -> None:
    rec = Recorder()
    p1, p3 = await backends(echo_app("v1")), await backends(echo_app("v3", rec))
    async with running_gateway(write_config(tmp_path, _routes(p1, p3))) as g:
        for extra in ({}, {"x-killgate-drill-route": "1"}):
            async with session.get(g.url + "/v2/models/iris/x",
                                   headers={"x-killgate-pin": "v3", **extra}) as r:
                await r.read()
                assert r.headers.get("x-killgate-version") == "v1", (extra, r.headers)
    assert not rec.requests  # the shadow's backend answered no client


def test_the_shadow_is_pinnable_on_the_drill_route_once_it_serves_in_production() -> None:
    cfg = parse_config_text("routes:\n" + textwrap.indent(_routes(1, 3), "  "))
    base = build_table(cfg, StateDoc())
    assert base.by_name["iris-drill"].choose(None, "v3", random.random).target.name == "v1"
    canary = StateDoc(overrides={"iris": RouteOverride(
        "v1", {"v1": 90.0, "v3": 10.0}, "a", "r", "t", "weights")})
    for table in (build_table(cfg, canary), rebuild_table(base, cfg, canary)):
        assert table.by_name["iris-drill"].choose(None, "v3", random.random).target.name \
            == "v3"
