"""A break-glass use counted at a start from a dead process's file is counted as its genuine
audit event says, and once across restarts (admin/glassjournal.py, glasscounted.py;
impglass2 items 1 and 2).

The file a process keeps for a use until it is counted names the use's audit id and its
words (action, actor). A start counted a leftover file whose id the trail holds as a
genuine break-glass event, but took the count's `action` label and the logged actor from
the FILE: whoever can write the folder relabelled a genuine use (an `unkill` counted as a
`rollback` by "mallory"). And the file, re-created after it was counted, was counted again
at each start. Now the words come from the verified event, and the ids counted are kept in
the folder (counted.json), so a re-created file is not counted again. Real `killgate
serve` processes on a real redis-server, SIGKILLed between commit and count by the test
hook, restarted twice.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.admin.glassjournal import STOP_BEFORE_COUNT_ENV
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token
from tests.test_breakglass_sigkill import GLASS, _count, break_glass_unkill_dies, glass_configs

pytestmark = pytest.mark.timeout(90)


async def _text(session: ClientSession, admin: str) -> str:
    async with session.get(admin + "/metrics") as r:
        return await r.text()


async def test_a_leftover_use_is_counted_as_its_event_says_and_once_across_restarts(
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
    original = left.read_text()
    # the file relabelled by one who can write the folder
    doc = json.loads(original)
    assert doc["glass"]["action"] == "unkill" and doc["glass"]["actor"] == "alice"
    doc["glass"].update(action="rollback", actor="mallory")
    left.write_text(json.dumps(doc))

    async def started(at: str) -> tuple[object, float]:
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
    assert 'killgate_break_glass_total{action="rollback"} 1' not in \
        await _text(session, b.admin)
    said = [ln for ln in b.output().splitlines()
            if "killgate.admin: break_glass " in ln and "from the audit trail" in ln]
    assert len(said) == 1 and 'actor="alice"' in said[0], b.output()[-3000:]
    assert "mallory" not in b.output()
    await asyncio.to_thread(b.stop)
    # the same file re-created, the process restarted: the use is not counted again
    for _ in range(2):
        (kept / f"999999-{doc['id']}.json").write_text(original)
        c, counted = await started(f"c{_}")
        assert counted == 0.0, c.output()[-3000:]
        assert "break_glass_counted_before" in c.output(), c.output()[-3000:]
        await asyncio.to_thread(c.stop)
