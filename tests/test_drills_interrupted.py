"""`killgate drill` interrupted or refused, end to end (control/drills.py, cli/drill.py),
against a fleet of three `killgate serve` processes sharing a real redis-server
(tests/drillfleet.py): a drill stopped at any step (SIGINT; SIGKILL when it opened,
injected or restored, then `killgate drill restore`; a failed steady-state check; an abort
condition met) or refused (a production route without --production and the kill scope)
leaves the fleet exactly as it found it, and each interrupted drill ends aborted, none left
open. The kinds themselves: tests/test_drills.py.

The fleet is shared by the module's tests (it takes seconds to start); every test leaves
it as it found it, which is what the tests check anyway.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.conftest import wait_until
from tests.drillfleet import (  # noqa: F401  (fleet_fixture: the module's fleet)
    Fleet,
    audit,
    every_change_is_audited,
    fleet_fixture,
    fleet_state,
    settled_state,
    token,
)
from tests.drillobserver import Observer
from tests.drillrig import FAST, Drill
from tests.test_cli import acli


async def test_sigint_mid_drill_restores_before_exiting(fleet: Fleet,
                                                        session: ClientSession) -> None:
    before = await settled_state(session, fleet)
    drill = Drill(fleet, "kill", "--route", "iris-drill", "--version", "v2", "--rate", "40",
                  "--steady", "500ms", "--hold", "30s", "--settle", "1s")
    await drill.wait_line("injected")
    assert (await fleet_state(session, fleet)) != before
    drill.proc.send_signal(signal.SIGINT)
    rc, report, err = await drill.result()
    assert rc == 2 and report is not None, err
    assert report["verdict"] == "aborted" and "SIGINT" in report["reasons"][0]
    assert report["restored"] is True
    assert await fleet_state(session, fleet) == before
    ends = [e for e in await audit(session, fleet, 10) if e["action"] == "drill.end"]
    assert ends[0]["after"]["verdict"] == "aborted"


@pytest.mark.parametrize("step", ["opened", "injected", "restored"])
async def test_sigkill_at_each_step_then_drill_restore(fleet: Fleet, session: ClientSession,
                                                       step: str) -> None:
    before = await settled_state(session, fleet)
    drill = Drill(fleet, "kill", "--route", "iris-drill", "--scope", "route", "--rate", "20",
                  "--steady", "1s", "--hold", "1s" if step == "restored" else "30s",
                  "--settle", "10s")
    await drill.wait_line(step)
    opened = next(x for x in drill.lines if " opened " in x)
    drill_id = opened.split("drill: drill ", 1)[1].split()[0]
    drill.kill()
    # the fleet is left as the drill left it, and says so
    await every_change_is_audited(session, fleet)
    if step == "injected":
        assert await fleet_state(session, fleet) != before  # the drill's kill is in force
    res = await acli("drill", "restore", drill_id, "--admin", fleet.admin, "--token", token())
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "exactly as before" in res.stdout
    await wait_until(lambda: _same(session, fleet, before), 5, 0.1, "the fleet as before")
    events = [e for e in await audit(session, fleet, 20) if e.get("drill") == drill_id]
    assert events[0]["action"] == "drill.end" and events[0]["after"]["verdict"] == "aborted"
    # a second restore finds the drill ended: nothing to do
    res = await acli("drill", "restore", drill_id, "--admin", fleet.admin, "--token", token())
    assert res.returncode == 0 and "ended already" in res.stderr, (res.stdout, res.stderr)
    if step != "opened":
        return
    # a token that may restore drills but not read their history: a clear answer (it was
    # a traceback)
    res = await acli("drill", "restore", drill_id, "--admin", fleet.admin, "--token",
                     token("killgate:drill"))
    assert res.returncode == 1 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    assert "history cannot be read" in res.stderr and "killgate:read" in res.stderr, res.stderr


async def _same(s: ClientSession, f: Fleet, before: list[dict[str, Any]]) -> bool:
    return await fleet_state(s, f) == before


async def test_failed_steady_state_check_aborts_and_keeps_the_operators_kill(
        fleet: Fleet, session: ClientSession) -> None:
    hdr = {"Authorization": f"Bearer {token('killgate:kill killgate:read', 'olga')}"}
    body = {"scope": "version", "route": "iris-drill", "version": "v2", "reason": "real"}
    async with session.post(fleet.admin + "/v1/kill?wait=2s", json=body, headers=hdr) as r:
        assert r.status == 200
    try:
        before = await settled_state(session, fleet)
        rc, report, err = await Drill(fleet, "kill", "--route", "iris-drill", "--version",
                                      "v2", *FAST).result()
        assert rc == 2 and report is not None, err
        assert report["verdict"] == "aborted"
        assert "steady-state" in report["reasons"][0], report["reasons"]
        assert report["receipts"].get("inject") is None  # nothing was injected
        assert await fleet_state(session, fleet) == before  # the operator's kill stays
    finally:
        async with session.post(fleet.admin + "/v1/unkill?wait=2s", json=body,
                                headers=hdr) as r:
            assert r.status == 200


async def test_abort_condition_stops_and_restores(fleet: Fleet, session: ClientSession,
                                                  tmp_path: Path) -> None:
    before = await settled_state(session, fleet)
    plan = tmp_path / "plan.yaml"
    plan.write_text("kind: kill\nroute: iris-drill\nversion: v2\nrate: 40\nsteady: 600ms\n"
                    "hold: 30s\nsettle: 1s\nabort: {route: broken, error_rate: 0.2, "
                    "min_requests: 10, interval: 200ms}\n")
    drill = Drill(fleet, "run", str(plan))
    await drill.wait_line("injected")
    users = Observer(session, fleet.urls, {}, path="/broken/x", rate=20)  # 502s
    users.start()
    try:
        rc, report, err = await drill.result()
    finally:
        await users.stop()
    assert rc == 2 and report is not None, err
    assert report["verdict"] == "aborted" and "error rate" in report["reasons"][0], report
    assert report["marks_ms"]["restore_sent"] < 15000  # long before the 30 s hold ended
    assert await fleet_state(session, fleet) == before


async def test_production_routes_need_the_flag_and_the_scope(fleet: Fleet,
                                                             session: ClientSession) -> None:
    before = await settled_state(session, fleet)
    rc, report, _ = await Drill(fleet, "kill", "--route", "iris", "--version", "v2",
                                *FAST).result()
    assert rc == 2 and report is not None and "--production" in report["reasons"][0]
    rc, report, err = await Drill(fleet, "kill", "--route", "iris", "--version", "v2",
                                  "--production", *FAST).result()
    assert rc == 2 and report is not None, err  # the kill scope is missing: refused
    assert "killgate:kill" in report["reasons"][0]
    assert await fleet_state(session, fleet) == before


async def test_history_shows_each_interrupted_drill_aborted_and_none_open(
        fleet: Fleet) -> None:
    """Run after the drills above: the history names them aborted; none is left open."""
    res = await acli("drill", "history", "--limit", "50", "--admin", fleet.admin, "--token",
                     token())
    assert res.returncode == 0, res.stderr
    assert "aborted" in res.stdout and "OPEN" not in res.stdout, res.stdout
