"""A quiet instance's snapshot through a key rotation (found by review revrot4): written at
step 1 with the old key (the instance applied the document a step-2 instance re-signed),
it was never written again at step 2 (nothing newer to apply), so at step 3 the instance
refused its own file as signed with an unknown key: counted as tampering
(store.verification, `UNVERIFIED` in killgate status, killgate_state_unverified_total) and
its kills only kept (with the store down at that start: overrides, weights and latched
rollbacks lost). A snapshot read signed with the previous key is now written again with
the current key at start.

Real redis-server, real gateways (the code of `killgate serve`), one snapshot file kept by
the same instance through its three restarts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import A_ENV, B_ENV, rotation
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)


async def test_a_quiet_instances_snapshot_is_signed_with_the_new_key_before_step_3(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    made = iter(range(10))

    def cfg(name: str, signing: str, previous: str | None = None) -> Path:
        # (a config of its own; the snapshot: `name`'s)
        return rot.cfg(name, signing, previous, folder=tmp_path / f"c{next(made)}")

    snapshot = tmp_path / "snapshot-p.json"

    def signer() -> str:
        return snapshot.read_bytes().split(b"\n", 1)[0].split(b" ")[1].decode()

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    async with running_gateway(cfg("p", A_ENV, B_ENV), "gw-p1") as gp:  # step 1
        await wait_until(lambda: gp.gw.sync.synced_once, 5, what="step 1 synced")
        gen = gp.gw.sync.holder.doc.generation
        async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g2:  # (re-signs)
            await wait_until(lambda: g2.gw.sync.synced_once, 5, what="step 2 synced")
        await wait_until(lambda: gp.gw.sync.holder.doc.generation > gen, 5,
                         what="the re-signed document applied at step 1")
        gen = gp.gw.sync.holder.doc.generation
    assert signer() == a.kid  # (its snapshot, at the fleet's generation, signed with A)
    async with running_gateway(cfg("p", B_ENV, A_ENV), "gw-p2") as gp:  # step 2: quiet
        sync = gp.gw.sync
        await wait_until(lambda: sync.synced_once and signer() == b.kid, 5,
                         what="the snapshot written again with the new key")
        assert sync.holder.doc.generation == gen  # (nothing new applied: the same document)
        assert sync.status()["verification"]["unverified_total"] == 0
    async with running_gateway(cfg("p", B_ENV), "gw-p3") as gp:  # step 3
        sync = gp.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        assert sync.status()["snapshot"]["kills_only"] is None, sync.status()["snapshot"]
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 0, ver
        assert "route:iris" in sync.holder.doc.kills
