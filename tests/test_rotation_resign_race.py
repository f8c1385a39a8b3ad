"""A rotation's step-2 re-sign whose read is overtaken by another commit (found by review
revrot4, 5 runs in 10 with two step-2 pods starting while a step-1 pod made a kill): a
step-2 instance holding no state yet read the fleet's document, still signed with the old
key, then heard a newer commit (the kill, or the other pod's re-sign) before its own
re-sign; taking the document it read for one "behind" the head it had heard, it logged
`audit_trail_lost` (ERROR) and counted killgate_audit_trail_lost_total, which pages
(KillgateAuditTrailLost: "found the state store without the audit trail it had
anchored"), for a routine rotation that lost nothing. A re-sign whose read was overtaken
now reads the store again and decides again, as a re-seed over an older document does.

Real redis-server, real gateways (the code of `killgate serve`); the overtaking commit is
a kill through a step-1 gateway's admin API, made between the step-2 gateway's first read
and its re-sign (its store's `load` wrapped to make it then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.state.redis import RedisStore
from gateway.state.signing import Key
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import A_ENV, B_ENV, KEY_B, rotation
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)


async def test_a_re_sign_overtaken_by_a_kill_is_no_lost_audit_trail(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    b = Key.of(KEY_B.encode())
    assert Key.of(STATE_KEY.encode()).kid != b.kid
    cfg = rot.cfg

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    async with running_gateway(cfg("s1", A_ENV, B_ENV), "gw-1") as g1:  # (step 1)
        await wait_until(lambda: g1.gw.sync.synced_once, 5, what="step 1 synced")
        load = RedisStore.load
        overtaken: list[int] = []

        async def load_then_kill(self: RedisStore, *args: Any, **kw: Any) -> Any:
            got = await load(self, *args, **kw)
            if self.step2 and got.old_key and not overtaken and got.doc is not None:
                # (a step-1 pod's kill lands between the read and the re-sign, heard)
                overtaken.append(got.doc.generation)
                await kill(session, g1.admin, scope="version", route="iris", version="v2")
                await wait_until(lambda: self._head_at[0] > got.doc.generation, 5,
                                 what="the kill's push heard")
            return got

        monkeypatch.setattr(RedisStore, "load", load_then_kill)
        async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g2:  # (no state)
            sync = g2.gw.sync
            await wait_until(lambda: sync.synced_once and overtaken, 5, what="step 2 synced")
            await wait_until(lambda: redis_server.cmd("GET", "kgtest:state").split(" ")[1]
                             == b.kid, 5, what="the document re-signed")
            await wait_until(lambda: "version:iris:v2" in sync.holder.doc.kills, 5,
                             what="the kill enforced at step 2")
            assert g2.gw.metrics.get("killgate_audit_trail_lost_total") == 0
            assert sync.trail_lost is None, sync.trail_lost
            assert g2.gw.metrics.get("killgate_state_reseeds_total") == 0
            _, page, _ = await sync.store.audit_newest(2)
            assert [e["action"] for e in page] == ["state.reseed", "kill"], page
            assert "step 2" in page[0]["reason"], page
