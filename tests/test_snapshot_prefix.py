"""A snapshot of another deployment (another `state.prefix`: staging beside production on
one redis, sharing the signing key) copied over this instance's (real redis-server, real
gateways). Its MAC binds it to its prefix, so it did not verify as ours, and was taken for
an untrusted file: its kills kept (kills only), adopted and re-seeded into this
deployment's store, staging's kill in force on production's whole fleet. The prefix is now
named inside the signed body too, and a file that verifies as another prefix's is refused
whole: a `snapshot_refused` error naming both prefixes, counted as an unverified
snapshot, `store.snapshot.refused` in /v1/status; the instance starts as one without a
snapshot (the store's state, its trail continued as it is).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.statuswarn import store_warnings
from gateway.log import _FIELDS
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.test_attacks_state import post
from tests.test_audit import H
from tests.test_keyed_audit import KEY, events_in, verify
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)


async def test_a_snapshot_of_another_prefix_is_refused_whole(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    p = await backends(echo_app("v1"))
    staging = write_config(tmp_path, two_versions(p, p), name="staging.yaml", state=redis_state(
        redis_server, tmp_path, name="staging").replace("prefix: kgtest", "prefix: staging"))
    async with running_gateway(staging) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
    theirs = (tmp_path / "snapshot-staging.json").read_bytes()
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="version", route="iris", version="v2")
    ours = events_in(redis_server)
    (tmp_path / "snapshot-a.json").write_bytes(theirs)
    caplog.set_level(logging.INFO, logger="killgate.state")
    async with running_gateway(cfg) as g:
        assert set(g.gw.holder.doc.kills) == {"version:iris:v2"}  # (not staging's kill)
        # nothing re-seeded: the trail continued as it is, staging's kill in no document
        assert events_in(redis_server) == ours
        snap: Any = g.gw.sync.snapshot
        assert snap.kills_only is None and snap.refused is not None
        assert "'staging'" in snap.refused and "'kgtest'" in snap.refused, snap.refused
        status = g.gw.sync.status()
        assert status["snapshot"]["refused"] == snap.refused
        assert status["verification"]["unverified"].get("snapshot") == 1
        refused = [getattr(r, _FIELDS) for r in caplog.records
                   if r.getMessage() == "snapshot_refused"]
        assert refused and refused[0]["prefix"] == "staging" and refused[0]["ours"] == "kgtest"
        async with session.get(g.admin + "/v1/status", headers=H) as r:
            st = await r.json()
            assert st["store"]["snapshot"]["refused"] == snap.refused
        assert any(w.startswith("SNAPSHOT REFUSED") and "'staging'" in w
                   for w in store_warnings(st)), store_warnings(st)  # (killgate status)
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 0, res.stdout + res.stderr
    stored = redis_server.cmd("GET", "kgtest:state")
    assert "route:iris" not in json.loads(stored.split("\n", 1)[1])["kills"]
    # the next snapshot written is this deployment's own again; each names its prefix
    assert b'"prefix": "kgtest"' in (tmp_path / "snapshot-a.json").read_bytes()
    assert b'"prefix": "staging"' in theirs


async def test_this_deployments_own_snapshot_is_still_read_whole(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """(the prefix named in the body is this one's: read as before; a file from before the
    prefix was named, the same)"""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
    redis_server.cmd("FLUSHALL")
    async with running_gateway(cfg) as g:
        snap: Any = g.gw.sync.snapshot
        assert getattr(snap, "refused", None) is None and snap.kills_only is None and snap.signed
        assert "route:iris" in g.gw.holder.doc.kills
