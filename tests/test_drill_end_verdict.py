"""A drill's end takes the runner's verdict, but not a "passed" the state contradicts
(admin/drills.py, domain/drillfinish.pass_refused): a drill that changed nothing (no kill,
rollback or fault injected) and one whose restore kept someone's change cannot have
passed. Refused 409 `verdict_refused`, the drill left open (restored) and nothing
recorded, so `killgate_drill_last_passed` and `KillgateDrillNotPassing` stay true.
In-process gateway, real backends."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession

from gateway.domain.drillfinish import pass_refused
from gateway.domain.statedoc import DrillRecord
from tests.backends import echo_app
from tests.conftest import running_gateway, write_config
from tests.drillrig import DRILL, call, hdr, open_drill, routes


async def test_a_drill_that_changed_nothing_cannot_end_passed(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        drill = await open_drill(session, a)
        gen = g.gw.holder.doc.generation
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end", {
            "verdict": "passed", "reason": "r", "summary": {"leaks": 0, "errors": 0,
                                                             "time_to_kill_ms": {"max": 1}}})
        assert st == 409, out
        assert out["error"]["type"] == "verdict_refused", out
        assert "made no change" in out["error"]["message"], out
        doc = g.gw.holder.doc
        assert (doc.generation, doc.drill_results) == (gen, {}) and drill in doc.drills
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"})
        assert st == 200, out
        # injected, restored by the runner, then ended passed: counted through the restore
        drill = await open_drill(session, a)
        for step in ("inject", "restore"):
            st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/{step}",
                                 {"reason": "r"})
            assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "passed", "reason": "r"})
        assert st == 200, out
        assert g.gw.holder.doc.drill_results["kill:iris-drill"]["verdict"] == "passed"


async def test_a_drill_whose_restore_kept_a_real_kill_cannot_end_passed(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        drill = await open_drill(session, a)
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", {"reason": "r"})
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/kill", {
            "scope": "version", "route": "iris-drill", "version": "v2",
            "reason": "real incident"}, hdr("killgate:kill", sub="oncall"))
        assert st == 200 and out["changed"] is True, out
        for restored_first in (True, False):
            if restored_first:
                st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/restore",
                                     {"reason": "r"})
                assert st == 200 and out["undone"][0]["kept"] == "version:iris-drill:v2", out
            gen = g.gw.holder.doc.generation
            st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                                 {"verdict": "passed", "reason": "r"})
            assert st == 409 and out["error"]["type"] == "verdict_refused", out
            assert "kept version:iris-drill:v2" in out["error"]["message"], out
            assert g.gw.holder.doc.generation == gen
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "failed", "reason": "r"}, hdr(DRILL))
        assert st == 200, out
        flag = g.gw.holder.doc.kills["version:iris-drill:v2"]
        assert (flag.actor, flag.reason) == ("oncall", "real incident")
        assert g.gw.holder.doc.drill_results["kill:iris-drill"]["verdict"] == "failed"


def test_a_record_an_older_version_wrote_counts_what_the_trail_has() -> None:
    rec = DrillRecord("d-1", "failover", "r", "v2", "a", "t", 0.0, {}, restored=True)
    assert pass_refused(rec) is not None  # (made 0: nothing in the state)
    assert pass_refused(rec, made_in_trail=True) is None
