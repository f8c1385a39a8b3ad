"""A reload's audit kept through a store outage was lost by a stop (found by revreload): kept
in memory only, the change whose event waited for the store was abandoned when the process
stopped (a deploy, a node drain, a crash: `config_reload_audit_abandoned` in the log, at
best), and the trail never had a `config.reload` event for it; after the restart nothing
said so. Now the changes waiting are kept in a file beside the snapshot
(`<snapshot_path>.reload-audits`, control/reloadkept.py) while they wait, and a start on that
file records them once the store answers.

Real redis-server stopped through the reload and the stop; real `killgate serve`, stopped
(SIGTERM), then started again after the store came back."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, wait_until
from tests.reloadrig import serve_a
from tests.staterig import redis_state
from tests.test_killswitch import auth
from tests.test_reload_audit_unjoined import reload_events

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_a_change_whose_audit_waits_survives_a_restart(
        tmp_path: Path, backends: Any, redis_server: RedisServer, gateway_procs: Any,
        session: ClientSession, how: str) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, command_timeout="200ms")
    served = await serve_a(tmp_path, p1, p2, state, gateway_procs)
    proc, cfg, b, da, db = served.proc, served.cfg, served.b, served.da, served.db

    async def config() -> dict[str, Any]:
        async with session.get(f"{proc.admin}/v1/status", headers=auth()) as r:
            return (await r.json())["config"]  # type: ignore[no-any-return]

    async def pending() -> bool:
        c = await config()
        return c["digest"] == db and bool(c["audit_pending"])

    redis_server.kill()
    cfg.write_bytes(b.read_bytes())
    proc.signal(signal.SIGHUP)
    await wait_until(pending, 15, interval=0.05, what="the change live, its audit pending")
    if how == "SIGTERM":
        assert await asyncio.to_thread(proc.stop) == 0, proc.output()
    else:  # (a crash: nothing runs on the way out)
        os.killpg(proc.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.proc.wait, 10)
    kept = tmp_path / "snapshot-a.json.reload-audits"
    assert kept.exists()  # (beside the snapshot, 0600)
    assert kept.stat().st_mode & 0o777 == 0o600
    redis_server.start()  # (empty: the instance puts its state back)
    again = gateway_procs(cfg)
    await asyncio.to_thread(again.wait_ready)

    def recorded() -> bool:
        return any(e["before"]["digest"] == da and e["after"]["digest"] == db
                   for e in reload_events(redis_server, "kgtest"))

    await wait_until(recorded, 20, interval=0.1, what="the change's config.reload event")
    await wait_until(lambda: not kept.exists(), 10, what="the kept file removed")
    assert len([e for e in reload_events(redis_server, "kgtest")
                if e["after"]["digest"] == db]) == 1
