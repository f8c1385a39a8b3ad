"""An old document replayed during a key rotation's step 2 (found by review revrot4): one
signed with the old key, written back into Redis by someone without a key, is a replay, as
ever, not the rotation's re-sign. A step-2 instance holding a newer state re-seeded over it
(right), but its audited `state.reseed` said "signed with the previous key (key rotation
step 2: re-signed ...)", the routine re-sign, and killgate_state_reseeds_total did not
move: the replay read as the rotation. It is now said and counted as what it is ("older").

Real redis-server, real gateways (the code of `killgate serve`).
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
from tests.staterig import connected
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)


async def test_an_old_keys_document_replayed_at_step_2_is_said_and_counted_a_replay(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
        old = redis_server.cmd("GET", "kgtest:state"), redis_server.cmd("GET", "kgtest:gen")
        await kill(session, g0.admin, scope="version", route="iris", version="v2")
    await connected(redis_server, a, b)  # (step 1)
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g2:  # (re-signs)
        sync = g2.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 2 synced")
        _, page, _ = await sync.store.audit_newest(1)
        assert "step 2" in page[0]["reason"], page  # (the rotation's re-sign)
        assert sync.metrics.get("killgate_state_reseeds_total") == 0
        mine = sync.holder.doc.generation
        # the replay: an older genuine document, signed with the old key, and its generation
        redis_server.cmd("SET", "kgtest:state", old[0])
        redis_server.cmd("SET", "kgtest:gen", old[1])
        await wait_until(lambda: sync.metrics.get("killgate_state_reseeds_total") == 1, 5,
                         what="the replay re-seeded over and counted")
        _, page, _ = await sync.store.audit_newest(1)
        ev = page[0]
        assert ev["action"] == "state.reseed" and "older" in ev["reason"], ev
        assert "step 2" not in ev["reason"], ev
        got = await sync.store.load()
        assert got.doc is not None and got.doc.generation > mine and not got.old_key
        assert {"route:iris", "version:iris:v2"} <= set(got.doc.kills)
