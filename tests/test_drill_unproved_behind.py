"""An unproved "behind" answer after a drill's restore fails the drill as not confirmed, and
says what could be why (control/drillbehind.py).

"Behind" without a valid proof was a warning only, so that a process at a replayed
heartbeat's address could not fail the drill; but an unproved "applied" now fails it (a
restore it is told of unproved is not taken for done), so such a process fails the drill
either way. Meanwhile an instance that really ran without the restore and could not prove
it let the drill pass, enforcing the drill's kill: a killgate older than the proofs during a
rolling upgrade (it answers without a `proof`), or one signing with a state key the drill
was not given. Real HTTP listeners on loopback answer as the instances.
"""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillbehind import behind
from gateway.control.drillload import AdminClient
from gateway.domain.readyzproof import drill_keys, proof
from tests.test_drill_unproven import _listener, _operator

pytestmark = pytest.mark.timeout(30)

SECRET, OTHER = b"s" * 32, b"o" * 32
DRILL, GEN = "d-8", 9


async def test_an_unproved_behind_answer_fails_the_drill_saying_why(backends) -> None:
    async def old(request: web.Request) -> web.Response:  # (a version before the proofs)
        return web.json_response({"instance": "old", "generation": GEN - 1, "ready": True})

    async def rotated(request: web.Request) -> web.Response:  # (a key the drill lacks)
        doc: dict[str, object] = {"instance": "rot", "generation": GEN - 1, "ready": True}
        doc["proof"] = proof("k2", OTHER, DRILL, "rot", GEN - 1, request.query["nonce"])
        return web.json_response(doc)

    async def honest(request: web.Request) -> web.Response:
        doc: dict[str, object] = {"instance": "ok", "generation": GEN, "ready": True}
        doc["proof"] = proof("k1", SECRET, DRILL, "ok", GEN, request.query["nonce"])
        return web.json_response(doc)

    at = {"old": await _listener(backends, old), "rot": await _listener(backends, rotated),
          "ok": await _listener(backends, honest)}
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        found = await behind(api, sorted(at), at, GEN, DRILL, drill_keys({"k1": SECRET}, DRILL),
                             catch_up=0.2)
    assert found.late == [] and found.unverified == ["old", "rot"], found
    assert found.unverified_applied == [] and found.unasked == [], found
    problems = found.problems()
    assert len(problems) == 2, problems  # (the drill fails: reasons, not a warning)
    old_, rot_ = problems
    assert old_.startswith("could not confirm the restore on old:"), old_
    assert "without a `proof` (a killgate older than the drill's proofs" in old_, old_
    assert "upgrade it, then drill again" in old_ and "enforcing the drill's kill" in old_
    assert rot_.startswith("could not confirm the restore on rot:"), rot_
    assert "key rotation not done on every instance" in rot_, rot_
    lines = found.lines(GEN)
    assert all(line.startswith("RESTORE NOT CONFIRMED: ") for line in lines), lines
    assert not any("RESTORE NOT APPLIED" in line for line in lines), lines
