"""The fleet closing an overdue drill (control/drillwatch.py), final review of 467c6e9:
`killgate drill restore` against a drill the fleet closes between its restore and its end,
a turn that fails unexpectedly, and a close the replicas do not confirm in time. A real
in-process gateway, real backends, a real redis-server for the replicas case."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.statedoc import StateDoc
from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, wait_until, write_config
from tests.drillrig import call, routes
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_drill_watch import _open_and_kill

pytestmark = pytest.mark.timeout(60)


async def test_drill_restore_of_a_drill_the_fleet_closes_meanwhile_exits_0(
        tmp_path: Path, backends, session: ClientSession) -> None:
    from tests.test_cli import acli

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), extra="drills: {auto_restore_after: 0s}\n")
    async with running_gateway(cfg) as g:
        await g.gw.drill_watch.stop()  # (its turns are taken below, at the moment that matters)
        drill = await _open_and_kill(session, g.admin, "1s")
        await wait_until(lambda: g.gw.holder.doc.drills[drill].deadline < time.time(), 5,
                         what="the deadline to pass")
        turns: list[asyncio.Task[Any]] = []

        def after(ev: dict[str, Any], new: StateDoc) -> None:
            # the fleet's turn comes right after the operator's restore (before the end)
            if ev.get("action") == "drill.restore":
                turns.append(asyncio.create_task(g.gw.drill_watch.check()))

        g.gw.sync.committed.append(after)
        res = await acli("drill", "restore", drill, "--reason", "the laptop died",
                         env={"KILLGATE_ADMIN_URL": g.admin,
                              "KILLGATE_TOKEN": admin_token("killgate:drill killgate:read")})
        assert turns and await turns[0] == [drill]  # (the fleet did close it in between)
        assert drill not in g.gw.holder.doc.drills
        assert "version:iris-drill:v2" not in g.gw.holder.doc.kills
        assert res.returncode == 0, res.stderr
        assert "run this again" not in res.stderr
        assert f"drill {drill}: restored" in res.stdout, res.stdout


async def test_a_turn_that_fails_unexpectedly_does_not_end_the_watch(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The watch's loop let only StateError and AuditError through: any other exception in
    a turn (a bug, a record it cannot read) ended its task for good, unseen until the stop,
    and no overdue drill was closed on that instance again. Now the turn is logged
    (drill_watch_failed) and the next one runs, as the rollout and shadow loops do."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), extra="drills: {auto_restore_after: 0s}\n")
    async with running_gateway(cfg) as g:
        watch = g.gw.drill_watch
        await watch.stop()
        real, calls = watch.config, []

        def config() -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug in one turn")
            return real()

        watch.config, watch.interval = config, 0.05
        await watch.start()
        drill = await _open_and_kill(session, g.admin, "1s")
        await wait_until(lambda: drill not in g.gw.holder.doc.drills, 10,
                         what="the fleet to close the drill after a failed turn")
        assert "version:iris-drill:v2" not in g.gw.holder.doc.kills


async def test_a_close_the_replicas_did_not_confirm_is_counted_and_logged(
        tmp_path: Path, backends, session: ClientSession, fwd: Forwarder,
        caplog: pytest.LogCaptureFixture) -> None:
    """With state.min_replicas, a write the replicas do not confirm in time is committed
    (in force) and raises NotDurable, a StateError: the watch's loop swallowed it, so the
    drill it had closed was never counted in killgate_drills_auto_restored_total nor
    logged (drill_auto_restored), and the next turn found nothing left to do."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state_via(fwd, tmp_path, "kgdw", min_replicas="1", replica_timeout="100ms")
    cfg = write_config(tmp_path, routes(p1, p2), state=state,
                       extra="drills: {auto_restore_after: 0s}\n")
    async with running_gateway(cfg) as g:
        watch = g.gw.drill_watch
        await watch.stop()
        # (a lone redis: every write is committed, then answered 503 not_durable)
        st, out = await call(session, "POST", f"{g.admin}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "duration": "1s", "reason": "rehearsal"})
        assert st == 503 and out["error"]["type"] == "not_durable", out
        drill = next(iter(g.gw.holder.doc.drills))
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/inject",
                             {"reason": "pull"})
        assert st == 503, out
        assert "version:iris-drill:v2" in g.gw.holder.doc.kills
        await wait_until(lambda: g.gw.holder.doc.drills[drill].deadline < time.time(), 5,
                         what="the deadline to pass")
        watch.interval = 0.05
        await watch.start()
        await wait_until(lambda: drill not in g.gw.holder.doc.drills, 10,
                         what="the fleet to close the drill")
        assert "version:iris-drill:v2" not in g.gw.holder.doc.kills
        await wait_until(lambda: g.gw.metrics.get("killgate_drills_auto_restored_total") == 1,
                         5, what="the close to be counted")
        assert any("drill_auto_restored" in r.getMessage() for r in caplog.records)
