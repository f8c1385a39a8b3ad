"""A key rotation rolled back after its step 2 (found by review revrot4): the fleet's
document was re-signed with the new key at step 2; rolled back (both keys, the old one
current, then the old one alone) with no write in between, it stays signed with the new
key (a step-1 instance never signs it back: it cannot tell a rollback from a late step 1),
and an instance on the old key alone holding no state is not ready. It told the SRE to
check that its key was the fleet's, and to restart it: it is, and a restart changes
nothing. It now names the rotation begun from its key (the key order step 1 wrote, signed
with its key) and the way out; which the test follows.

Real redis-server, real gateways (the code of `killgate serve`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.statuswarn import store_warnings
from gateway.state.signing import Key
from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import A_ENV, B_ENV, KEY_B, rotation
from tests.test_killswitch import auth, kill

pytestmark = pytest.mark.timeout(40)


async def test_an_instance_after_a_rolled_back_rotation_says_how_to_get_ready(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    b = Key.of(KEY_B.encode())
    cfg = rot.cfg

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    async with running_gateway(cfg("s1", A_ENV, B_ENV), "gw-1") as g:  # step 1
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="step 1 synced")
    async with running_gateway(cfg("s2", B_ENV, A_ENV), "gw-2") as g:  # step 2: re-signs
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="step 2 synced")
    assert redis_server.cmd("GET", "kgtest:state").split(" ")[1] == b.kid
    # rolled back: the old key current, the new one previous (quiet), then the old alone
    async with running_gateway(cfg("r1", A_ENV, B_ENV), "gw-r1") as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="rolled back synced")
    async with running_gateway(cfg("r0", A_ENV), "gw-r0") as g:
        sync = g.gw.sync
        await wait_until(lambda: sync.unverifiable, 5, what="the document refused")
        said = str(sync.unverifiable)
        assert "rolled back after step 2" in said and b.kid in said, said
        assert "Fix it and restart" not in said, said
        await wait_until(lambda: "rolled back after step 2" in str(sync.last_error), 5,
                         what="the sync loop's error says it too")
        async with session.get(g.admin + "/v1/status", headers=auth()) as r:
            line = next(x for x in store_warnings(await r.json())
                        if x.startswith("STATE UNVERIFIABLE"))  # (killgate status's line)
        assert "rolled back after step 2" in line and "restart this instance" not in line, line
        # the way out it names: a write through an instance holding both keys, ours current
        async with running_gateway(cfg("r1b", A_ENV, B_ENV), "gw-r1b") as g1:
            await kill(session, g1.admin, scope="version", route="iris", version="v2")
        await wait_until(lambda: sync.unverifiable is None and sync.ready, 10,
                         what="ready on the document signed with its key")
        assert {"route:iris", "version:iris:v2"} <= set(sync.holder.doc.kills)
