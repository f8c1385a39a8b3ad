"""Game-day review of the drills: what an SRE running them on a real fleet (three `killgate
serve` processes, one redis-server, the demo's model servers; tests/test_drills.py's rig)
found. Each test failed before its fix."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession

from tests.conftest import RedisServer
from tests.test_drills import FAST, Drill, Fleet, fleet, fleet_state  # noqa: F401

pytestmark = pytest.mark.timeout(120)


async def test_store_loss_on_another_fleets_redis_is_skipped(
        fleet: Fleet, second_redis: RedisServer, session: ClientSession) -> None:  # noqa: F811
    """--store pointing at another deployment's redis (staging's, a neighbour team's: the
    same prefix, so a state document under the same key) passed the check: the drill
    paused that redis, measured a fleet that never lost its store, and PASSED, with 'the
    state store was unreachable for 2000 ms'. The store must hold this fleet's instances
    (their heartbeats), not just a key of the right name."""
    second_redis.cmd("SET", "kgdrill:state", "KGS1 another deployment's document")
    second_redis.cmd("HSET", "kgdrill:instances", "staging-1", "x")
    before = await fleet_state(session, fleet)
    rc, report, err = await Drill(fleet, "store-loss", "--route", "iris-drill", "--version",
                                  "v2", "--store", second_redis.url, *FAST).result(60)
    assert report is not None, err
    assert rc == 3 and report["verdict"] == "skipped", report
    assert report["id"] is None and "not the fleet's store" in report["reasons"][0], report
    assert await fleet_state(session, fleet) == before
