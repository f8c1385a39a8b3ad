"""Drills past their deadline are restored and ended by the fleet (control/drillwatch.py):
before, a drill whose process died left what it injected in force (a kill of its route,
or of everything) until someone ran `killgate drill restore`. An in-process gateway with
real backends; the drill's CLI is played by admin API calls that stop half-way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.config import DrillsConfig
from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.drillrig import answer, call, routes

pytestmark = pytest.mark.timeout(60)


async def _open_and_kill(s: ClientSession, admin: str, duration: str) -> str:
    st, out = await call(s, "POST", f"{admin}/v1/drills",
                         {"kind": "kill", "route": "iris-drill", "version": "v2",
                          "duration": duration, "reason": "rehearsal"})
    assert st == 200, out
    drill = out["drill"]
    st, out = await call(s, "POST", f"{admin}/v1/drills/{drill}/inject", {"reason": "pull"})
    assert st == 200, out
    return str(drill)


async def test_a_drill_left_open_past_its_deadline_is_restored_and_ended(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), extra="drills: {auto_restore_after: 0s}\n")
    async with running_gateway(cfg) as g:
        drill = await _open_and_kill(session, g.admin, "1s")
        url = g.url + "/drill/iris/infer"
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v1", "failover")
        # the drill's process is gone: nothing restores it; the fleet does, past its deadline
        await wait_until(lambda: drill not in g.gw.holder.doc.drills, 20,
                         what="the fleet to close the drill")
        assert "version:iris-drill:v2" not in g.gw.holder.doc.kills
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v2", "pinned")
        assert g.gw.metrics.get("killgate_drills_auto_restored_total") == 1
        st, out = await call(session, "GET", f"{g.admin}/v1/audit?limit=5")
        end = next(e for e in out["events"] if e["action"] == "drill.end")
        assert end["actor"] == "killgate/auto" and end["after"]["verdict"] == "aborted"
        assert end["after"]["automatic"] is True and "deadline" in end["reason"]
        assert {"unkill": "version:iris-drill:v2"} in end["after"]["undone"]
        # the drill's own late calls find it ended: a clear answer, nothing changed
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/end",
                             {"verdict": "passed", "reason": "late"})
        assert st == 404, out
        assert await g.gw.drill_watch.check() == []  # (nothing left to do)


async def test_a_drill_within_its_grace_or_with_auto_restore_off_is_left_alone(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2),
                       extra="drills: {auto_restore_after: 1h}\n")
    async with running_gateway(cfg) as g:
        drill = await _open_and_kill(session, g.admin, "1s")
        await wait_until(lambda: g.gw.holder.doc.drills[drill].deadline < time.time(), 5,
                         what="the deadline to pass")
        assert await g.gw.drill_watch.check() == []  # past the deadline, within the grace
        g.gw.drill_watch.config = lambda: g.gw.loaded.config.model_copy(
            update={"drills": DrillsConfig(auto_restore_after=None)})
        g.gw.drill_watch.clock = lambda: 10 ** 10  # far past any grace
        assert await g.gw.drill_watch.check() == []  # off
        assert drill in g.gw.holder.doc.drills
        assert "version:iris-drill:v2" in g.gw.holder.doc.kills


def test_auto_restore_after_is_checked() -> None:
    assert DrillsConfig().auto_restore_after == 60.0
    assert DrillsConfig(auto_restore_after=None).auto_restore_after is None
    with pytest.raises(ValueError, match="between 0s and 24h"):
        DrillsConfig(auto_restore_after="48h")
