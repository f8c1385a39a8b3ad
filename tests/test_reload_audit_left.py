"""A sibling making a change late, once the fleet has left it (revleft's fresh claim that
looks for the change's event on the trail, occurrence.py `change_event`): one instance
makes A -> B (recorded), then B -> A (recorded: the fleet is on A again); the other, on A
all along (a staged deploy paused, then resumed), makes A -> B past its claim's hour (or
the claim deleted by a redis writer). Its change has the first one's key (the same two
files from the same occurrence), and its fresh claim found the first's event and wrote
none: an instance serving B with the trail's last word for the fleet A, unaudited. An
event of the change is its own only while the trail holds no later change made from the
occurrence it left (`after.occurrence` of the key its own digests and that occurrence
make); past one, the change is recorded (at worst twice, never lost).

Real redis-server, two gateways, the claim deleted between the reloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway
from tests.test_reload_audit_claimgone import claims
from tests.test_reload_audit_double import fast_pair, reload_events, reload_to

pytestmark = pytest.mark.timeout(60)


async def test_a_change_made_late_after_the_fleet_left_it_is_recorded(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    copies, b = fast_pair(tmp_path, redis_server, "kgleft", p1, p2)
    a = tmp_path / "a.yaml"
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        await reload_to(g1, copies[0], b)  # A -> B
        await reload_to(g1, copies[0], a)  # B -> A: the fleet left B's occurrence
        assert len(reload_events(redis_server, "kgleft")) == 2
        for claim in claims(redis_server, "kgleft"):  # (an hour on; or a redis writer)
            redis_server.cmd("DEL", claim)
        await reload_to(g2, copies[1], b)  # the other, on A all along: A -> B
        events = reload_events(redis_server, "kgleft")
        assert [(e["source"], e["after"]["digest"]) for e in events][-1] == (
            "two", load_config(b).digest), events


async def test_a_change_made_late_with_no_change_since_is_still_the_first_ones(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    """(revleft's case kept: no change made since the first's, the late sibling's is the
    same change, written once.)"""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    copies, b = fast_pair(tmp_path, redis_server, "kgkept", p1, p2)
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        await reload_to(g1, copies[0], b)
        for claim in claims(redis_server, "kgkept"):
            redis_server.cmd("DEL", claim)
        await reload_to(g2, copies[1], b)
        assert [e["source"] for e in reload_events(redis_server, "kgkept")] == ["one"]
