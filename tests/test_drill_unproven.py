"""An instance's "applied" answer to a drill, at the admin address the store gave, must
prove itself too (control/drillbehind.py, domain/readyzproof.py).

Only "behind" was checked: a process listening at a replayed heartbeat's address (or at a
gone instance's port) answering "I am B, I applied the restore" without a proof made the
drill take B for done, and pass, while B itself could still enforce the drill's kill. With
keys (a fleet with a state signing key) such an answer is `unverified_applied` and the drill
fails naming it; without keys, the report says the answers were taken unproven. Real HTTP
listeners on loopback; the real drill CLI against real `killgate serve` on a real redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillbehind import behind
from gateway.control.drillload import AdminClient
from gateway.domain.readyzproof import drill_keys, proof
from tests.conftest import RedisServer
from tests.test_drill_behind import impostor_drill

pytestmark = pytest.mark.timeout(90)

SECRET = b"k" * 32


async def _listener(backends, answer) -> str:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/readyz", answer)
    return f"http://127.0.0.1:{await backends(app)}"


async def _operator(backends) -> str:  # type: ignore[no-untyped-def]
    async def fleet(request: web.Request) -> web.Response:
        return web.json_response({"instances": {}})

    app = web.Application()
    app.router.add_get("/v1/status", fleet)
    return f"http://127.0.0.1:{await backends(app)}"


async def test_an_unproved_applied_answer_is_not_taken_for_the_restore(backends) -> None:
    seen: list[dict[str, str]] = []

    async def claim(request: web.Request) -> web.Response:  # (no proof: it cannot make one)
        seen.append(dict(request.query))
        return web.json_response({"instance": "b", "generation": 9, "ready": True})

    async def honest(request: web.Request) -> web.Response:  # (the real one, proving it)
        doc: dict[str, object] = {"instance": "c", "generation": 9, "ready": True}
        if "nonce" in request.query:
            doc["proof"] = proof("k1", SECRET, request.query["drill"], "c", 9,
                                 request.query["nonce"])
        return web.json_response(doc)

    liar, real = await _listener(backends, claim), await _listener(backends, honest)
    keys = drill_keys({"k1": SECRET}, "d-1")
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        keyed = await behind(api, ["b", "c"], {"b": liar, "c": real}, 5, "d-1", keys)
        bare = await behind(api, ["b", "c"], {"b": liar, "c": real}, 5)
    assert seen and all("nonce" in q for q in seen[:1]), seen
    assert keyed.unverified_applied == ["b"] and keyed.late == [], keyed
    assert keyed.unproven == [] and keyed.check()["proof"] == "required", keyed
    assert any("could not confirm the restore on b" in p for p in keyed.problems()), keyed
    # without keys it is taken at its word, as before, and the report says so
    assert bare.unverified_applied == [] and bare.unproven == ["b", "c"], bare
    assert bare.check()["proof"] == "unproven" and bare.problems() == [], bare


async def test_a_drill_fails_on_an_unproved_applied_answer_at_a_gone_instances_address(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    """B leaves during the drill and another process takes its admin port, answering as B,
    applied, without a proof: the drill passed on it; now it fails, naming B."""
    def claim(_request: web.Request, name: str) -> dict[str, Any]:
        return {"instance": name, "generation": 10**6, "ready": True}

    async with impostor_drill(tmp_path, backends, redis_server, gateway_procs, claim) as (
            name, code, report, err):
        assert report is not None and report["verdict"] == "failed", (code, err[-3000:], report)
        check = report["restore_check"]
        assert check["unverified_applied"] == [name] and check["proof"] == "required", check
        assert check["late"] == [] and check["unasked"] == [], check
        assert any(f"could not confirm the restore on {name}" in r
                   for r in report["reasons"]), report["reasons"]
        assert f"RESTORE NOT CONFIRMED: could not confirm the restore on {name}" in err, err


def test_the_summary_says_which_restores_were_taken_unproven() -> None:
    """The human summary (what `killgate drill` prints) says so too, not the JSON alone."""
    from gateway.control.drillbehind import Behind
    from gateway.domain.drillsummary import markdown
    from tests.test_drillreport import MARKS, RATE, analyse, kill_plan, killed_at, timeline

    plan = kill_plan()
    m = analyse(plan, None, timeline("a", 4.0, killed_at(1.2)), MARKS)
    report = {"id": "d-1", "kind": "kill", "verdict": "passed", "reasons": [], "route": "r",
              "version": "v2", "started": "s", "finished": "f", "restored": True,
              "rate": RATE, "targets": plan.targets.model_dump(), **m}
    bare = Behind(unproven=["b"], proof="unproven").check()
    assert "Unproven: the restore applied by b" in markdown({**report, "restore_check": bare})
    keyed = Behind(proof="required").check()
    assert "Unproven" not in markdown({**report, "restore_check": keyed})
    assert "Unproven" not in markdown(report)
