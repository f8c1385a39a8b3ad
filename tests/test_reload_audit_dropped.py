"""A config change whose audit was dropped (more changes than PENDING_MAX waiting for the
store) was said by one log line only (found by revreload): `/v1/status` listed the changes
still waiting, `killgate status` said AUDIT PENDING for them and nothing of the one dropped,
and once the store answered, nothing at all: the trail silently lacked a change. Now
`/v1/status` says it (`config.audit_dropped`: how many, the last) and `killgate status`
prints AUDIT DROPPED, for as long as the process runs.

Real redis-server stopped through the reloads, then started again; PENDING_MAX set to 1 (a
module constant: 64 reloads in an outage, the same path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.control import reloadaudit
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, running_gateway, wait_until, write_config
from tests.staterig import redis_state
from tests.test_cli import acli
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(60)


async def test_a_dropped_audit_is_said_by_status(
        tmp_path: Path, backends: Any, redis_server: RedisServer, session: ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reloadaudit, "PENDING_MAX", 1)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, "a", command_timeout="200ms")
    files = [write_config(tmp_path, _route("iris", {"v1": (p1, 100 - w), "v2": (p2, w)}),
                          state=state, name=f"{w}.yaml") for w in (0, 10, 20)]
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(files[0].read_bytes())
    cfg.chmod(0o600)
    async with running_gateway(cfg, "a") as g:
        redis_server.kill()
        digests = [g.gw.loaded.digest]
        for src in files[1:]:
            cfg.write_bytes(src.read_bytes())
            g.gw.request_reload()
            await wait_until(lambda s=src: g.gw.watcher is not None and g.gw.loaded.raw == (
                s.read_bytes()) and g.gw.watcher.outcome.loaded_digest == g.gw.loaded.digest,
                15, what="the reload")
            digests.append(g.gw.loaded.digest)
        redis_server.start()
        await wait_until(lambda: not g.gw.history.pending(), 30, interval=0.1,
                         what="the first change's audit recorded")
        async with session.get(f"{g.admin}/v1/status", headers=auth()) as r:
            config = (await r.json())["config"]
        dropped = config.get("audit_dropped")
        assert dropped and dropped["count"] == 1, config
        assert (dropped["last"]["from"], dropped["last"]["to"]) == (digests[1], digests[2])
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.admin,
                                        "KILLGATE_TOKEN": admin_token("killgate:read")})
        assert res.returncode == 0, res.stderr
        assert "AUDIT DROPPED" in res.stdout, res.stdout
