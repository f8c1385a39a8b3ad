"""A break-glass use whose process is SIGKILLed between its commit and its count is counted
at the next start (admin/glassjournal.py).

The count (`killgate_break_glass_total`, and the ERROR `break_glass` line) follows the
commit's answer: a process killed in between (the OOM killer, a node lost) left the trail's
event, committed with the state in one script, and no count in any process, so an alert on
the counter never saw the use (impdrill8 item 2). Now the event's id is kept in a file
beside the state snapshot until the use is counted, and a starting process counts the
uses a dead process left whose events the trail holds (genuine, `break_glass: true`).
Real `killgate serve` processes on a real redis-server; the SIGKILL comes from the process
itself at that point, by the test hook `KILLGATE_TEST_SIGKILL_BEFORE_GLASS_COUNT=1` (read
only on a break-glass write; never set outside tests).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession

from gateway.admin.glassjournal import STOP_BEFORE_COUNT_ENV
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, free_port, two_versions, write_config
from tests.test_admin_approvals import APPROVALS
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(60)
GLASS = "killgate:kill killgate:read killgate:breakglass"
COUNT = re.compile(r'^killgate_break_glass_total\{action="unkill"\} (\S+)$', re.M)


async def _count(session: ClientSession, admin: str) -> float:
    async with session.get(admin + "/metrics") as r:
        found = COUNT.search(await r.text())
    return float(found.group(1)) if found else 0.0


def glass_configs(tmp_path: Path, redis_server: RedisServer, port: int) -> Callable[[str], Path]:
    """A config in `tmp_path/<at>` for each start: one snapshot path for all (each process
    is the one before restarted), the two-person rule on, fresh ports."""
    routes = two_versions(port, port)

    def config(at: str) -> Path:
        (tmp_path / at).mkdir()
        return write_config(tmp_path / at, routes, state=_state(redis_server, tmp_path),
                            extra=APPROVALS, listen=f"127.0.0.1:{free_port()}",
                            admin=f"127.0.0.1:{free_port()}")
    return config


async def break_glass_unkill_dies(session: ClientSession, gw: Any,
                                  auth: dict[str, str]) -> None:
    """A break-glass global unkill through `gw`, started with STOP_BEFORE_COUNT_ENV: its
    process is SIGKILLed after the commit, before the count, and answers nothing."""
    with pytest.raises(aiohttp.ClientError):  # (the process dies before it answers)
        async with session.post(gw.admin + "/v1/unkill", headers=auth, json={
                "scope": "global", "reason": "over", "break_glass": True}) as r:
            await r.read()
    assert await asyncio.to_thread(gw.proc.wait, 10) == -signal.SIGKILL


async def test_a_use_killed_before_its_count_is_counted_at_the_next_start(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    config = glass_configs(tmp_path, redis_server, await backends(echo_app("v1")))

    auth = {"Authorization": f"Bearer {admin_token(GLASS, 'alice')}"}
    a = gateway_procs(config("a"), env={STOP_BEFORE_COUNT_ENV: "1"})
    await asyncio.to_thread(a.wait_ready)
    async with session.post(a.admin + "/v1/kill", json={"scope": "global", "reason": "x"},
                            headers=auth) as r:
        assert r.status == 200, await r.text()
        killed = (await r.json())["audit_id"]
    # a refused break-glass write (nothing killed on the route): no use, nothing kept
    async with session.post(a.admin + "/v1/unkill", headers=auth, json={
            "scope": "route", "route": "iris", "reason": "x", "break_glass": True}) as r:
        assert r.status == 409, await r.text()
    kept = tmp_path / "snap.json.glass"
    # (but the lock process a holds for its life: glasslock.py)
    assert not kept.exists() or list(kept.glob("*.json")) == []
    await break_glass_unkill_dies(session, a, auth)
    assert len(list(kept.glob("*.json"))) == 1, list(kept.iterdir())
    # files no use of a dead process left: one naming a genuine event that is no
    # break-glass use (the kill), one naming no event: neither is counted, both go
    glass = {"action": "unkill", "actor": "mallory"}
    for eid in (killed, "0" * 32):
        (kept / f"999999-{eid}.json").write_text(json.dumps(
            {"id": eid, "time": time.time(), "glass": glass}))
    b = gateway_procs(config("b"))
    await asyncio.to_thread(b.wait_ready)
    async with session.get(b.admin + "/v1/audit?limit=5", headers=auth) as r:
        events = (await r.json())["events"]
    used = [e for e in events if e["action"] == "unkill"]
    assert len(used) == 1 and used[0].get("break_glass") is True, events  # (it landed)
    deadline = asyncio.get_running_loop().time() + 10
    while await _count(session, b.admin) < 1:
        assert asyncio.get_running_loop().time() < deadline, b.output()[-3000:]
        await asyncio.sleep(0.05)
    assert await _count(session, b.admin) == 1.0
    said = [ln for ln in b.output().splitlines()
            if "killgate.admin: break_glass " in ln and "from the audit trail" in ln]
    assert len(said) == 1 and 'actor="alice"' in said[0], b.output()[-3000:]
    assert list(kept.glob("*-*.json")) == []  # (counted once: a third start counts nothing)
    assert list(kept.glob(".lock-*")) == []  # (dead a's lock swept; b made none)
    assert "mallory" not in b.output()
