"""A flushed store on which an instance without a snapshot wrote from 64 zeros before the
re-seed of an instance that remembered more (real redis-server, two gateways on it, the
real CLI): `audit verify` reports the loss at the re-seed (the head it names is not in
the trail before it), and retention refused the trail for good (`audit_trim_refused`
every hour, the trail growing without bound; no operator action could end it). It is now
trimmed, re-seed included, once the re-seed is past the bounds, by the task or by hand
(`POST /v1/audit/trim`), and the checkpoint says what was lost. Shapes that deleting
events makes stay breaks (tests/test_retention.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_audit import H
from tests.test_audit_retention import RETAIN, _fill, _verify
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)


async def test_a_loss_after_a_fresh_start_from_zeros_is_trimmed_and_stays_said(
        tmp_path: Path, backends, session, redis_server: Any) -> None:
    p = await backends(echo_app("v1"))

    def cfg(name: str) -> Path:
        (tmp_path / name).mkdir(exist_ok=True)
        return write_config(tmp_path / name, two_versions(p, p), state=redis_state(
            redis_server, tmp_path, name=name, extra=RETAIN % "1h"))

    async with running_gateway(cfg("y"), "y") as y:  # (y remembers generation 3)
        for v in ("v2", "v1"):
            async with session.post(y.admin + "/v1/routes/iris/promote", headers=H,
                                    json={"version": v, "reason": "y"}) as r:
                assert r.status == 200, await r.text()
    redis_server.cmd("FLUSHALL")
    async with running_gateway(cfg("z"), "z") as z:  # (no snapshot: a fresh trail)
        async with session.post(z.admin + "/v1/kill", headers=H,
                                json={"scope": "route", "route": "iris", "reason": "z"}) as r:
            assert r.status == 200, await r.text()
        async with running_gateway(cfg("y"), "y") as y:
            store = y.gw.sync.store

            async def reseeded() -> bool:
                return any(e["action"] == "state.reseed" for e in await store.audit_events())

            await wait_until(reseeded, 5, what="y's re-seed over z's older generation")
            events = await store.audit_events()
            assert events[0]["prev_hash"] == "0" * 64 and events[-1]["action"] == "state.reseed"
            # it continues the event before it (z's), not the head y's snapshot anchored
            # (StateStore.anchored: chained there, it was a break retention refused for good)
            assert events[-1]["prev_hash"] == events[-2]["hash"] != events[-1]["anchored_head"]
            lost = events[-1]["anchored_head"]
            res = await asyncio.to_thread(_verify, y.admin)
            assert res.returncode == 1 and "not in the trail before it" in res.stderr, res
            await _fill(y, 100)
            async with session.post(y.admin + "/v1/audit/trim", headers=H,
                                    json={"reason": "after the flush"}) as r:
                done = await r.json()
                assert r.status == 200 and done["removed"] == len(events), done
            ck = (await store.audit_events())[-1]
            assert ck["after"]["starts_after"]["lost_before"] == lost, ck["after"]
            res = await asyncio.to_thread(_verify, y.admin)
            assert res.returncode == 0, res.stdout + res.stderr
            assert "before them the store had lost its trail" in res.stdout, res.stdout
