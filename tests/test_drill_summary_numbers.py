"""A drill's end carries a summary whose numbers every instance exports as gauges
(killgate_drill_last_*). JSON allows integers of any length; a float gauge does not. A
summary number beyond a float's range must be refused with a 400, never kept in the state
where it broke /metrics (500) on every instance until the next drill of its kind and route."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, write_config
from tests.drillrig import call, hdr, open_drill, routes

HUGE = "1" + "0" * 400  # valid JSON; float() of it overflows


async def test_a_summary_number_beyond_a_float_is_refused_and_metrics_stay_up(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        drill = await open_drill(session, a)
        for summary in (f'{{"leaks": {HUGE}}}', f'{{"time_to_kill_ms": {{"max": -{HUGE}}}}}',
                        f'{{"note": [{HUGE}]}}'):
            body = f'{{"verdict": "passed", "reason": "r", "summary": {summary}}}'
            async with session.post(f"{a}/v1/drills/{drill}/end", data=body, headers={
                    **hdr(), "content-type": "application/json"}) as r:
                text = await r.text()
                assert r.status == 400, text
                assert "summary" in text
        async with session.get(f"{a}/metrics") as r:
            assert r.status == 200, await r.text()
        # the drill is still open, and ends with a summary of ordinary numbers (once it
        # injected: a drill that changed nothing cannot end passed)
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", {"reason": "r"})
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end", {
            "verdict": "passed", "reason": "r", "summary": {"leaks": 0, "errors": 2 ** 53}})
        assert st == 200, out
        async with session.get(f"{a}/metrics") as r:
            text = await r.text()
            assert r.status == 200, text
            assert 'killgate_drill_last_errors{kind="kill",route="iris-drill"} 9.007' in text
