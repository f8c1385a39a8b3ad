"""A drill whose kill an operator took over meanwhile (the version really is bad: a kill of
the same key during the drill) ends with that kill kept, as the README promises, and must
say so. It printed only 'restored: generation N applied by 3/3' and a FAILED report whose
reasons were 'showed no answer from before the drill after the restore' on every instance
and 'the fleet is not as it was before the drill': nothing named the kill kept or why. An
on-call reading that at 3 a.m. takes the kill for the drill's leftover and lifts it: a real
kill lifted. Real `killgate serve` processes on a real redis (tests/test_drills.py's rig)."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession

from tests.test_drills import Drill, Fleet, fleet, fleet_state, token  # noqa: F401

pytestmark = pytest.mark.timeout(120)


async def test_a_kill_an_operator_took_over_during_the_drill_is_named_as_kept(
        fleet: Fleet, session: ClientSession) -> None:  # noqa: F811
    before = await fleet_state(session, fleet)
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
        fleet: Fleet, session: ClientSession) -> None:  # noqa: F811
    """A real incident elsewhere during the drill (an operator kills route 'broken'): the
    drill FAILED with 'the fleet is not as it was before the drill' and nothing else, so
    the on-call diffed two JSON objects to learn which kill it was, or took it for the
    drill's leftover. The reasons now name it, and say it is not the drill's."""
    before = await fleet_state(session, fleet)
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
