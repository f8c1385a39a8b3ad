"""The 503 of an unkill the store cannot take, a local kill stopping the version here
(revnewuser7), names the journal to edit to end that kill by hand. It named the one the
file *now* running says (`<state.snapshot_path>.local-kills` of the config reloaded last),
but the state section applies at a restart: after a reload that moved snapshot_path, the
operator was sent at 3 a.m. to a file that does not exist, and the kill stayed. It names
the journal this process keeps.

A real `killgate serve`, real redis-server (killed for the outage), real backends."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, free_port, wait_until, write_config
from tests.staterig import redis_state
from tests.test_local_kill import _routes

pytestmark = pytest.mark.timeout(90)

AUTH = bearer("killgate:admin", "alice", 3 * 3600)  # (the suite may outlive a shorter one)
V2 = {"scope": "version", "route": "iris", "version": "v2", "reason": "INC-9: v2 returns 500"}


async def _get(s: ClientSession, url: str) -> tuple[int, Any]:
    async with s.get(url, headers=AUTH, timeout=ClientTimeout(total=5)) as r:
        return r.status, await r.json(content_type=None)


async def test_the_unkill_503_names_the_journal_this_process_keeps(
        tmp_path: Path, redis_server: RedisServer, backends: Any, gateway_procs: Any) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _routes(p1, p2), state=redis_state(redis_server, tmp_path),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    kept = tmp_path / "snapshot-a.json.local-kills"
    async with ClientSession() as s:
        digest = (await _get(s, gw.admin + "/v1/status"))[1]["config"]["digest"]
        # snapshot_path moved in the file, reloaded: it applies at the next start
        cfg.write_text(cfg.read_text().replace("snapshot-a.json", "snapshot-b.json"))
        gw.signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return (await _get(s, gw.admin + "/v1/status"))[1]["config"]["digest"] != digest

        await wait_until(reloaded, 15, what="the reload applied")
        redis_server.kill()

        async def unreadable() -> bool:
            return (await _get(s, gw.admin + "/v1/audit"))[0] == 503

        await wait_until(unreadable, 10, what="the store unreachable")
        async with s.post(gw.admin + "/v1/kill?local=1", json=V2, headers=AUTH) as r:
            assert r.status < 300, await r.text()
        assert kept.exists() and not (tmp_path / "snapshot-b.json.local-kills").exists()
        async with s.post(gw.admin + "/v1/unkill", json={**V2, "reason": "INC-9: mistake"},
                          headers=AUTH) as r:
            body = await r.json()
        said = body["error"]["message"]
        assert r.status == 503 and "stopped here by a local kill" in said, body
        assert f"journal, {kept} (README" in said, said
