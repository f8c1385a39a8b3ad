"""A break-glass use counted at a start is recorded in the audit trail, so deleting the
folder's `counted.json` does not let a re-created file count it again (admin/glasscounted.py;
impleft9 item 1, stop 40's "left alone": one who can write the journal's folder, the
gateway's user, deleted counted.json beside a copy of the use's file and the next start
counted the use once more: `killgate_break_glass_total` rang for a use never made). Real
`killgate serve` processes on a real redis-server, SIGKILLed between commit and count by
the test hook, restarted twice.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.admin.glassjournal import STOP_BEFORE_COUNT_ENV
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token
from tests.test_breakglass_sigkill import GLASS, _count, break_glass_unkill_dies, glass_configs

pytestmark = pytest.mark.timeout(90)


async def _trail(session: ClientSession, admin: str, auth: dict[str, str]) -> list[Any]:
    async with session.get(admin + "/v1/audit?limit=50", headers=auth) as r:
        assert r.status == 200, await r.text()
        return list((await r.json())["events"])


async def test_a_use_counted_at_a_start_is_not_counted_again_without_counted_json(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    config = glass_configs(tmp_path, redis_server, await backends(echo_app("v1")))
    auth = {"Authorization": f"Bearer {admin_token(GLASS, 'alice')}"}
    a = gateway_procs(config("a"), env={STOP_BEFORE_COUNT_ENV: "1"})
    await asyncio.to_thread(a.wait_ready)
    async with session.post(a.admin + "/v1/kill", json={"scope": "global", "reason": "x"},
                            headers=auth) as r:
        assert r.status == 200, await r.text()
    await break_glass_unkill_dies(session, a, auth)
    kept = tmp_path / "snap.json.glass"
    [left] = [f for f in kept.iterdir() if f.name.endswith(".json")]
    original, eid = left.read_text(), json.loads(left.read_text())["id"]

    async def started(at: str) -> tuple[Any, float]:
        g = gateway_procs(config(at))
        await asyncio.to_thread(g.wait_ready)
        deadline = asyncio.get_running_loop().time() + 10
        while [f for f in kept.iterdir() if f.name.endswith(".json")
               and f.name != "counted.json"]:  # (reconciled: the file goes)
            assert asyncio.get_running_loop().time() < deadline, g.output()[-3000:]
            await asyncio.sleep(0.05)
        return g, await _count(session, g.admin)

    b, counted = await started("b")
    assert counted == 1.0, b.output()[-3000:]
    deadline = asyncio.get_running_loop().time() + 5
    while not (marks := [e for e in await _trail(session, b.admin, auth)
                         if e["action"] == "breakglass.counted"]):
        assert asyncio.get_running_loop().time() < deadline, b.output()[-3000:]
        await asyncio.sleep(0.05)
    assert [(m["counted"], m["target"]["audit_id"], m["target"]["action"], m["actor"])
            for m in marks] == [(eid, eid, "unkill", "killgate/auto")]
    await asyncio.to_thread(b.stop)
    # the file re-created and the folder's record of the count deleted: not counted again
    (kept / f"999999-{eid}.json").write_text(original)
    (kept / "counted.json").unlink()
    c, counted = await started("c")
    assert counted == 0.0, c.output()[-3000:]
    assert "break_glass_counted_before" in c.output(), c.output()[-3000:]
    assert len([e for e in await _trail(session, c.admin, auth)
                if e["action"] == "breakglass.counted"]) == 1  # (no second record)
    await asyncio.to_thread(c.stop)


async def test_a_forged_record_of_a_count_does_not_stop_the_count(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """Only a genuine `breakglass.counted` (its hash and MAC under an audit key) says a use
    was counted: one added to the trail by whoever writes Redis, without the key, would
    otherwise hide a use a dead process left from `killgate_break_glass_total`."""
    from gateway.admin.glassjournal import Journal
    from tests.conftest import running_gateway, two_versions, write_config
    from tests.staterig import store_on
    from tests.test_admin_approvals import APPROVALS
    from tests.test_breakglass_leftover_scan import _leave, _uses
    from tests.test_revops_fleet import _state

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(redis_server, tmp_path),
                       extra=APPROVALS)
    async with running_gateway(cfg, "inst-glass") as g:
        (eid,) = await _uses(session, g.admin, 1)
    store = store_on(redis_server, "revops")
    await store.open()
    try:
        [use] = [e for e in await store.audit_events() if e["id"] == eid]
        forged = {**use, "id": "f" * 32, "action": "breakglass.counted", "counted": eid,
                  "break_glass": None, "actor": "killgate/auto", "mac": "0" * 64}
        await store._call("XADD", "revops:audit", "*", "e", json.dumps(forged))
        counted: list[dict[str, Any]] = []
        folder = tmp_path / "left.glass"
        _leave(folder, f"999999-{eid}", eid)
        await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        assert [c["action"] for c in counted] == ["unkill"]
    finally:
        await store.close()
