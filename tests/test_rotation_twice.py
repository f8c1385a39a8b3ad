"""Two signing key rotations in a row (A to B, then B to C): the left-overs of key A, still
in the store after both (the counts of a pod replaced while the fleet signed with A, the
heartbeat of one that crashed), are counted as `retired`, not as tampering. Found by review
impleft8: the ids retired from a key were kept under that key's id alone, so the second
rotation recorded B as retired from C but not A, and every instance at step 3 of it counted
A's left-overs as `unknown_key_id` (store.verification.unverified_total, which the shipped
alert KillgateStateUnverified pages on): a false page on a routine second rotation.

Real redis-server, real gateways (the code of `killgate serve`) for the fleet's document at
each step, bare RedisStores for the instances that only connect (steps 1) and for A's
left-overs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.control.traffic import STATS_KEY
from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import B_ENV, KEY_B, keys_config
from tests.staterig import connected, store_on
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)

KEY_C = "c" * 64


async def test_a_second_rotation_keeps_the_first_ones_left_overs_apart_from_tampering(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(B_ENV, KEY_B)
    monkeypatch.setenv("KG_KEY_C", KEY_C)
    p = await backends(echo_app("v1"))
    a, b, c = (Key.of(k.encode()) for k in (STATE_KEY, KEY_B, KEY_C))

    def cfg(name: str, signing: str) -> Path:
        return keys_config(tmp_path, redis_server, p, name, signing)

    async def connect(current: Key, previous: Key | None = None) -> set[str]:
        return (await connected(redis_server, current, previous)).keys.retired

    async with running_gateway(cfg("s0", "signing_key_env: KILLGATE_TEST_STATE_KEY"),
                               "gw-a") as g0:  # (the fleet's document: A's)
        await kill(session, g0.admin, scope="route", route="iris")
    old = store_on(redis_server, "kgtest", current=a)
    await old.open()
    try:
        for route in (STATS_KEY, "iris"):  # (the gateway's own counts: not the left-overs)
            await old._call("HDEL", f"kgtest:stats:{route}", "gw-a")
        await old.put_stats(STATS_KEY, "gone-pod", {"instance": "gone-pod", "t": 1.0})
        await old.heartbeat("crashed-pod", 0, "sha256:x")
    finally:
        await old.close()
    # rotation 1 (A to B): step 1, step 2 (re-signs the document), step 3
    await connect(a, b)
    async with running_gateway(cfg("b2", "signing_key_env: KG_KEY_B\n"
                                         "  previous_signing_key_env: KILLGATE_TEST_STATE_KEY"),
                               "gw-b2") as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
    assert await connect(b) == {a.kid}
    # rotation 2 (B to C)
    await connect(b, c)
    async with running_gateway(cfg("c2", "signing_key_env: KG_KEY_C\n"
                                         "  previous_signing_key_env: KG_KEY_B"), "gw-c2") as g:
        await kill(session, g.admin, scope="global")
    async with running_gateway(cfg("c3", "signing_key_env: KG_KEY_C"), "gw-c3") as g3:
        sync = g3.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        assert all(s.get("instance") != "gone-pod" for s in await sync.store.get_stats(STATS_KEY))
        assert "crashed-pod" not in await sync.peers.members()
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 0, ver  # (no tampering: what pages)
        # (A's counts and heartbeat; the step-2 gateways' counts are B's left-overs)
        assert ver["retired_key"]["heartbeat"] == 1 and ver["retired_key"]["stats"] >= 1, ver
        assert sorted(ver["retired_key_ids"]) == sorted([a.kid, b.kid]), ver
        # when A was retired came along too: A's values written long after it still count
        # as tampering (retiredkeys.after_retirement)
        assert set(sync.store.keys.retired_since) == {a.kid, b.kid}
