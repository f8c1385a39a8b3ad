"""Audit events appended at once by one instance (an alert's action, a config reload and
an operator's drill, each its own task: `append_audit`) are appended, each once, with no
re-seed (found by helper impleft7): two appends' loads and commits interleaved; the one
that loaded first, seeing the other's newer head in this instance's memory, took the store
for behind it (a restored backup), re-seeded it (a spurious `state.reseed` in the trail,
`killgate_state_reseeds_total`), and after five tries raised "the state kept changing".
Appends now take the instance's write lock, as writes do. Real redis, an in-process
gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.audit import AuditDraft
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_audit_retention import _state, _verify

pytestmark = pytest.mark.timeout(60)


async def test_appends_at_once_in_one_instance_are_each_written_without_a_reseed(
        tmp_path: Path, backends: Any, redis_server: Any) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        reseeds = sync.metrics.get("killgate_state_reseeds_total")
        for rnd in range(5):
            got = await asyncio.gather(*(sync.append_audit(AuditDraft(
                actor=f"t{i}", action="config.reload", target={"round": rnd, "i": i},
                reason="at once")) for i in range(8)), return_exceptions=True)
            errors = [e for e in got if isinstance(e, BaseException)]
            assert errors == [], errors[:2]
        events: list[dict[str, Any]] = []
        cursor = None
        while True:  # (pages may be cut short: read to the end)
            page, nxt = await sync.store.audit_since(cursor, 500)
            events += page
            if not page or nxt == cursor:
                break
            cursor = nxt
        actions = [e["action"] for e in events]
        assert "state.reseed" not in actions, actions
        assert actions.count("config.reload") == 40, actions
        assert sync.metrics.get("killgate_state_reseeds_total") == reseeds
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, (res.stdout, res.stderr)
