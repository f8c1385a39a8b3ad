"""A config reload's audit event whose append lost its five tries to other instances'
appends (StoreConflict: `append_audit`'s answer under back-to-back appends from a fleet
that reloads at once) is tried again (found by review revaudit5): it was given up, logged,
and on a lone instance (no sibling to take over its claim) the applied change was in no
audit event. Real redis-server, an in-process gateway; the lost races are `append_audit`'s
own answer, made to come once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.audit import AuditDraft
from gateway.errors import StoreConflict
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.staterig import redis_state
from tests.test_kill_after_routing_reload import _route

pytestmark = pytest.mark.timeout(30)


async def test_a_reload_whose_append_lost_its_races_is_recorded(
        tmp_path: Path, backends: Any, redis_server: RedisServer, session: ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, "a")
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}), state=state,
                     name="a.yaml")
    b = write_config(tmp_path, _route("iris", {"v1": (p1, 90), "v2": (p2, 10)}), state=state,
                     name="b.yaml")
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(a.read_bytes())
    cfg.chmod(0o600)
    async with running_gateway(cfg, "a") as g:
        sync = g.gw.sync
        real, lost = sync.append_audit, [0]

        async def append(draft: AuditDraft) -> Any:
            if draft.action == "config.reload" and not lost[0]:
                lost[0] += 1
                raise StoreConflict("the state kept changing; the audit event was not written")
            return await real(draft)

        monkeypatch.setattr(sync, "append_audit", append)
        cfg.write_bytes(b.read_bytes())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.raw == b.read_bytes(), 10, what="the reload")
        digest = g.gw.loaded.digest

        await wait_until(lambda: digest in redis_server.cmd("XRANGE", "kgtest:audit", "-", "+"),
                         5, what="the reload's audit event")
        assert lost[0] == 1
        assert [e["action"] for e in await sync.store.audit_events()
                if e.get("after", {}).get("digest") == digest] == ["config.reload"]
