"""A re-seed over another branch of the history says the trail loss `audit verify` reports
(found by review revsync).

a's kill was lost by the store (put back to before it, as a failover to a replica that
lacked it is, and written on by b at the same generation). a merged b's branch by a
re-seed naming its own head, which the store's trail lacks: `audit verify` reported "the
store lost events", but no instance said AUDIT TRAIL LOST (`/v1/status`,
`audit_trail_lost`, `killgate_audit_trail_lost_total`): only a re-seed of an emptied store
or of one behind (an older document) said it. The re-seed now reads back the store's trail
from the head its document anchors, and says the loss when it lacks ours.

Real redis-server, in-process gateways each behind a fault proxy, the store's keys put back
with COPY.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_attacks_state import post
from tests.test_keyed_audit import KEY, verify

pytestmark = pytest.mark.timeout(90)

KEYS = ("state", "gen", "audit", "audit:head")


async def test_a_reseed_over_another_branch_says_the_events_it_lacks(
        tmp_path: Path, backends, session, redis_server: RedisServer, fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p)
    fa = Forwarder(redis_server.port)
    await fa.start()
    try:
        for n in ("a", "b"):
            (tmp_path / n).mkdir()
        cfg_a = write_config(tmp_path / "a", routes, state=redis_state_via(
            fa, tmp_path / "a", "kgtest", command_timeout="300ms"))
        cfg_b = write_config(tmp_path / "b", routes, state=redis_state_via(
            fwd, tmp_path / "b", "kgtest", command_timeout="300ms"))
        async with running_gateway(cfg_a, "a") as a, running_gateway(cfg_b, "b") as b:
            await wait_until(lambda: a.gw.holder.doc.generation > 0
                             and a.gw.holder.doc.audit_head == b.gw.holder.doc.audit_head,
                             10, 0.05, "both hold the same state")
            for k in KEYS:  # (what a replica holds)
                redis_server.cmd("COPY", f"kgtest:{k}", f"kept:{k}", "REPLACE")
            fwd.point(None)  # b cut off; a kills, then is cut off too
            await post(session, a.admin, "/v1/kill", scope="route", route="iris")
            held = a.gw.holder.doc
            fa.point(None)
            for k in KEYS:  # the store put back without a's kill (the replica promoted)
                redis_server.cmd("COPY", f"kept:{k}", f"kgtest:{k}", "REPLACE")
            fwd.point(redis_server.port)
            await wait_until(lambda: b.gw.sync.connected, 15, 0.05, "b reconnects")
            await post(session, b.admin, "/v1/kill", scope="version", route="iris",
                       version="v2")
            assert b.gw.holder.doc.generation == held.generation  # (another branch)
            fa.point(redis_server.port)  # a merges b's branch: a re-seed
            await wait_until(lambda: "route:iris" in b.gw.holder.doc.kills
                             and a.gw.holder.doc.audit_head == b.gw.holder.doc.audit_head,
                             20, 0.05, "a's re-seed, applied by b")
            res = await asyncio.to_thread(verify, a.admin, *KEY)
            assert res.returncode == 1 and "the store lost events" in res.stderr, res.stderr
            assert held.audit_head[:16] in res.stderr, res.stderr
            lost = a.gw.sync.trail_lost
            assert lost is not None and lost["anchored_head"] == held.audit_head, lost
            assert lost["reseeded_by"] == "a", lost
            assert a.gw.metrics.get("killgate_audit_trail_lost_total") == 1
            await wait_until(lambda: b.gw.sync.trail_lost is not None, 10, 0.05,
                             "b to say the loss a's re-seed reported")
            assert b.gw.sync.trail_lost["anchored_head"] == held.audit_head
    finally:
        await fa.close()
