"""A drill past its deadline injects nothing more: its deadline bounds how long what it
changes can stay in force (README: the fleet restores a drill still open
`drills.auto_restore_after` past it; `null`: never). A drill process that hung (a laptop
suspended mid-drill) and woke up past its deadline killed the version anyway, a kill the
deadline was meant to bound. Its restore and end still work. In-process gateway, real
backends and redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.drillrig import answer, call, routes

pytestmark = pytest.mark.timeout(60)


async def test_a_drill_past_its_deadline_injects_nothing(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), extra="drills: {auto_restore_after: null}\n")
    async with running_gateway(cfg) as g:
        st, out = await call(session, "POST", f"{g.admin}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "duration": "1s", "reason": "rehearsal"})
        assert st == 200, out
        drill = out["drill"]
        await wait_until(lambda: g.gw.holder.doc.drills[drill].deadline < time.time(), 5,
                         what="the deadline to pass")
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/inject",
                             {"reason": "pull"})
        assert st == 409 and out["error"]["type"] == "drill_overdue", out
        assert "deadline" in out["error"]["message"]
        assert f"killgate drill restore {drill}" in out["error"]["message"]
        assert "version:iris-drill:v2" not in g.gw.holder.doc.kills
        url = g.url + "/drill/iris/infer"
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v2", "pinned")
        # what closes it still works
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/restore",
                             {"reason": "late"})
        assert st == 200, out
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "late"})
        assert st == 200, out
        assert drill not in g.gw.holder.doc.drills
