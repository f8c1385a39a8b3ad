"""An automatic action's audit event the sync loop appends late (a fail-closed trip or
clear noted while the store was away: `_pending_audit`) that loses its tries to
other instances' appends is kept for the next cycle, and the store is not taken for lost
(found by review revaudit5): the StoreConflict left the sync loop's cycle, which logged
`state_store_lost`, closed every connection to a healthy store and reconnected (the
subscription that brings kills dropped meanwhile), at the moment a whole fleet appends
those events together (each tripped and cleared as the store came back). Real
redis-server, an in-process gateway; the lost races are `append_audit`'s own answer,
made to come once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.domain.audit import AuditDraft
from gateway.errors import StoreConflict
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)


async def test_a_late_automatic_event_that_lost_its_races_waits_for_the_next_cycle(
        tmp_path: Path, backends: Any, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg, "a") as g:
        sync = g.gw.sync
        await wait_until(lambda: sync.synced_once and sync.connected, 5, what="the first sync")
        real_append, real_reset = sync.append_audit, sync.store.reset
        lost, resets = [0], [0]

        async def append(draft: AuditDraft, **kw: Any) -> Any:
            if not lost[0]:
                lost[0] += 1
                raise StoreConflict("the state kept changing; the audit event was not written")
            return await real_append(draft, **kw)

        async def reset() -> None:
            resets[0] += 1
            await real_reset()

        monkeypatch.setattr(sync, "append_audit", append)
        monkeypatch.setattr(sync.store, "reset", reset)
        sync._pending_audit.append(AuditDraft(
            actor="killgate/auto", action="fail_closed.clear", target={"scope": "global"},
            reason="the state store answers again", source="a"))
        await wait_until(lambda: not sync._pending_audit, 5,
                         what="the event appended at a later cycle")
        events = await sync.store.audit_events()
        assert [e["action"] for e in events].count("fail_closed.clear") == 1
        assert lost[0] == 1
        assert resets[0] == 0, "the store was taken for lost and its connections reset"
        assert sync.connected
