"""A drill whose kill an operator took over meanwhile (the version really is bad: a kill of
the same key during the drill) ends with that kill kept, as the README promises, and must
say so. It printed only 'restored: generation N applied by 3/3' and a FAILED report whose
reasons were 'showed no answer from before the drill after the restore' on every instance
and 'the fleet is not as it was before the drill': nothing named the kill kept or why. An
on-call reading that at 3 a.m. takes the kill for the drill's leftover and lifts it: a real
kill lifted. Real `killgate serve` processes on a real redis (tests/drillfleet.py's rig)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, write_config
from tests.drillfleet import Fleet, fleet_fixture, fleet_state, settled_state, token  # noqa: F401
from tests.drillrig import Drill, call, hdr, open_drill, routes
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(120)


async def test_a_kill_an_operator_took_over_during_the_drill_is_named_as_kept(
        fleet: Fleet, session: ClientSession) -> None:
    before = await settled_state(session, fleet)
    hdr = {"Authorization": f"Bearer {token('killgate:kill killgate:read', 'olga')}"}
    body = {"scope": "version", "route": "iris-drill", "version": "v2",
            "reason": "v2 is really bad"}
    drill = Drill(fleet, "kill", "--route", "iris-drill", "--version", "v2", "--rate", "20",
                  "--steady", "1s", "--hold", "2s", "--settle", "1s")
    await drill.wait_line("injected")
    try:
        async with session.post(fleet.admin + "/v1/kill?wait=2s", json=body,
                                headers=hdr) as r:
            assert r.status == 200, await r.text()
        rc, report, err = await drill.result(60)
        assert report is not None, err
        assert rc == 1 and report["verdict"] == "failed", report
        kept = [r for r in report["reasons"] if "version:iris-drill:v2" in r]
        assert kept and "kept" in kept[0] and "never undoes" in kept[0], report["reasons"]
        assert "kept version:iris-drill:v2" in err, err
        # the operator's kill is in force on every instance
        assert all("versioniris-drillv2" in s["kills"] for s in await fleet_state(session, fleet))
    finally:
        async with session.post(fleet.admin + "/v1/unkill?wait=2s", json=body,
                                headers=hdr) as r:
            assert r.status == 200
    assert await fleet_state(session, fleet) == before


async def test_a_fleet_not_as_before_says_what_differs(
        fleet: Fleet, session: ClientSession) -> None:
    """A real incident elsewhere during the drill (an operator kills route 'broken'): the
    drill FAILED with 'the fleet is not as it was before the drill' and nothing else, so
    the on-call diffed two JSON objects to learn which kill it was, or took it for the
    drill's leftover. The reasons now name it, and say it is not the drill's."""
    before = await settled_state(session, fleet)
    hdr = {"Authorization": f"Bearer {token('killgate:kill killgate:read', 'olga')}"}
    body = {"scope": "route", "route": "broken", "reason": "a real incident"}
    drill = Drill(fleet, "kill", "--route", "iris-drill", "--version", "v2", "--rate", "20",
                  "--steady", "1s", "--hold", "2s", "--settle", "1s")
    await drill.wait_line("injected")
    try:
        async with session.post(fleet.admin + "/v1/kill?wait=2s", json=body,
                                headers=hdr) as r:
            assert r.status == 200, await r.text()
        rc, report, err = await drill.result(60)
        assert report is not None, err
        assert rc == 1 and report["verdict"] == "failed", report
        assert "the fleet is not as it was before the drill" in report["reasons"]
        named = [r for r in report["reasons"] if "route:broken" in r]
        assert named and "killed now" in named[0] and "someone else" in named[0], \
            report["reasons"]
        assert report["leaks"] == 0 and report["errors"] == 0, report
    finally:
        async with session.post(fleet.admin + "/v1/unkill?wait=2s", json=body,
                                headers=hdr) as r:
            assert r.status == 200
    assert await fleet_state(session, fleet) == before


async def test_drill_restore_says_a_kept_kill_is_someone_elses(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """`killgate drill restore ID` (the drill's process died) of a drill whose kill an
    operator took over meanwhile printed 'kept="version:iris-drill:v2" why="lifted or
    replaced since the drill made it"' and 'NOT restored: the route is not as before the
    drill': read at 3 a.m. as the drill's leftover, to lift (a real kill lifted). It now
    says, as the drill runner does, that someone changed it during the drill and a
    drill's restore never undoes that, and names what differs."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        drill = await open_drill(session, a)
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", {"reason": "r"})
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/kill", {
            "scope": "version", "route": "iris-drill", "version": "v2",
            "reason": "v2 is really bad"}, hdr("killgate:kill", "olga"))
        assert st == 200, out
        got = await acli("drill", "restore", drill, "--admin", a, "--token",
                         token("killgate:drill killgate:read"))
        assert got.returncode == 1, (got.stdout, got.stderr)
        assert "kept version:iris-drill:v2" in got.stderr and "never undoes" in got.stderr, \
            got.stderr
        assert "killed now, not before the drill: version:iris-drill:v2" in got.stderr, \
            got.stderr
        assert g.gw.holder.doc.kills["version:iris-drill:v2"].actor == "olga"
