"""Rotating the signing key back to an earlier one (A to B, later B to A): the left-overs of
key B, still in the store after the second rotation's step 3 (the counts of the pods that
signed with B, the heartbeat of one that crashed), are counted as `retired`, not as
tampering. Found by review improt3: the key order `order:A:B` the first rotation wrote
("from A to B") was read again by the second, so its step-1 instances (B, previous A) took
themselves for step 2 of the first and its step-2 instances (A, previous B) for step 1:
B was never recorded as retired from A, and every instance at step 3 counted B's
left-overs as `unknown_key_id` (store.verification.unverified_total, which the shipped
alert KillgateStateUnverified pages on). A step-3 instance now marks the rotation done in
the order, and a step-1 instance finding it done writes the new rotation's order.

Real redis-server, real gateways (the code of `killgate serve`) for the fleet's document at
each step, bare RedisStores for the instances that only connect and for B's left-overs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.control.traffic import STATS_KEY
from gateway.state.signing import Key
from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import A_ENV, B_ENV, rotation
from tests.staterig import connected, store_on
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)


async def test_rotating_back_to_an_earlier_key_keeps_the_left_overs_apart_from_tampering(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    async def connect(current: Key, previous: Key | None = None) -> set[str]:
        return (await connected(redis_server, current, previous)).keys.retired

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:  # (the fleet's: A's)
        await kill(session, g0.admin, scope="route", route="iris")
    # rotation 1 (A to B): step 1, step 2 (re-signs the document), step 3
    await connect(a, b)
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
    assert await connect(b) == {a.kid}
    # B's left-overs: a pod replaced while the fleet signed with B, one that crashed
    gone = store_on(redis_server, "kgtest", current=b)
    await gone.open()
    try:
        await gone.put_stats(STATS_KEY, "gone-pod", {"instance": "gone-pod", "t": 1.0})
        await gone.heartbeat("crashed-pod", 0, "sha256:x")
    finally:
        await gone.close()
    # rotation 2 (B back to A): step 1, step 2 (re-signs the document), step 3
    await connect(b, a)
    # a pod still on B alone restarting mid-rollout: must not undo the new rotation's order
    assert await connect(b) == {a.kid}
    async with running_gateway(cfg("a2", A_ENV, B_ENV), "gw-a2") as g:
        await kill(session, g.admin, scope="global")
        assert g.gw.sync.status()["verification"]["unverified_total"] == 0
    async with running_gateway(cfg("a3", A_ENV), "gw-a3") as g3:
        sync = g3.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        assert all(s.get("instance") != "gone-pod" for s in await sync.store.get_stats(STATS_KEY))
        assert "crashed-pod" not in await sync.peers.members()
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 0, ver  # (no tampering: what pages)
        assert ver["retired_key"]["heartbeat"] == 1 and ver["retired_key"]["stats"] >= 1, ver
        assert ver["retired_key_ids"] == [b.kid], ver
        assert set(sync.store.keys.retired_since) == {b.kid}
        assert sync.key_unconfirmed() is None


async def test_step_2_re_signs_the_old_keys_document_at_start_so_a_quiet_fleet_reaches_step_3(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 3 begun in a fleet that made no write at step 2 (found by review improt3): the
    document was still signed with the old key, so every step-3 instance without a state of
    its own stayed unready and KillgateStateUnverified paged until an operator made a write
    through a step-2 instance. A step-2 instance (the key order proves it: never a step-1
    one, which would sign it back) now re-signs it as it connects: an audited re-seed."""
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    step1 = store_on(redis_server, "kgtest", current=a, previous=b)
    await step1.open()
    try:
        assert (await step1.load()).old_key is False  # (step 1: signs nothing back)
    finally:
        await step1.close()
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g2:  # (no write)
        await wait_until(lambda: g2.gw.sync.synced_once, 5, what="step 2 synced")
        store = g2.gw.sync.store
        got = await store.load()
        assert got.doc is not None and "route:iris" in got.doc.kills, got
        assert not got.old_key
        raw = await store._call("GET", "kgtest:state")
        assert raw.split(b" ")[1].decode() == b.kid  # (signed with the new key now)
        _, page, _ = await store.audit_newest(1)
        assert page[0]["action"] == "state.reseed" and "step 2" in page[0]["reason"], page
    async with running_gateway(cfg("b3", B_ENV), "gw-b3") as g3:
        sync = g3.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        assert sync.ready, sync.status()
        assert "route:iris" in sync.holder.doc.kills
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 0, ver
