"""A crash soon after a reload against a store that does not answer (revleft, suspicion 1b
of the reload audit): the change was kept on disk (control/reloadkept.py) only once its
audit's first try had failed, a command timeout after it began (a frozen redis: the try
waits it out), and it began only after the route history's write (app.py's steps), which
waits up to 6 command timeouts: a crash in those seconds lost it, and the trail never had
a `config.reload` event for it, nothing said so. Now the audit is queued before that
write, and kept at once when the sync is not connected, else once KEEP_AFTER passed
unrecorded (a store that froze since its last answer).

Real redis-server frozen (SIGSTOP) through the reload and the crash; real `killgate serve`,
killed (SIGKILL) during the first try, started again once the store answers."""

from __future__ import annotations

import asyncio
import contextlib
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


async def test_a_change_is_kept_before_its_first_try_ends(
        tmp_path: Path, backends: Any, redis_server: RedisServer, gateway_procs: Any,
        session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    # (a long command timeout: the first try against the frozen store lasts that long)
    state = redis_state(redis_server, tmp_path, command_timeout="3s")
    served = await serve_a(tmp_path, p1, p2, state, gateway_procs)
    proc, cfg, b, da, db = served.proc, served.cfg, served.b, served.da, served.db
    kept = tmp_path / "snapshot-a.json.reload-audits"

    async def live() -> bool:
        async with session.get(f"{proc.admin}/v1/status", headers=auth()) as r:
            return bool((await r.json())["config"]["digest"] == db)

    redis_server.freeze()
    try:
        cfg.write_bytes(b.read_bytes())
        proc.signal(signal.SIGHUP)
        await wait_until(live, 15, interval=0.02, what="the change live")
        # (a command timeout at least before the try or the route history's write ends;
        # not failed here: the test proves what the restart records)
        with contextlib.suppress(AssertionError):
            await wait_until(kept.exists, 1, interval=0.02, what="the change kept on disk")
        os.killpg(proc.proc.pid, signal.SIGKILL)  # (a crash: nothing runs on the way out)
        await asyncio.to_thread(proc.proc.wait, 10)
    finally:
        redis_server.thaw()
    again = gateway_procs(cfg)
    await asyncio.to_thread(again.wait_ready)

    def recorded() -> bool:
        return any(e["before"]["digest"] == da and e["after"]["digest"] == db
                   for e in reload_events(redis_server, "kgtest"))

    await wait_until(recorded, 20, interval=0.1, what="the change's config.reload event")
    await wait_until(lambda: not kept.exists(), 10, what="the kept file removed")
