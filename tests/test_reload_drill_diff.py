"""`killgate diff` and the reload decide alike whether a file dropping a latched route is
refused (found by review of a69a862): the reload let a file drop a route whose only latch
is an open drill's rollback (its restore undoes it, route or no route), but diff, which
read status, where nothing said which latch was a drill's, said "would refuse" for it. A
pipeline gating merges on diff then blocked a file the gateway takes. Both now call one
decision (domain/reloadcheck.py) over the same facts, status showing the drill's part.

Run on the same states of a real gateway on a real redis-server: an operator's latch only,
a drill's rollback over the operator's latch, a drill's rollback only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.configfile import load_config
from gateway.errors import ConfigError
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    running_gateway,
    wait_until,
    write_config,
)
from tests.drillrig import call, hdr, routes
from tests.staterig import redis_section
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)

ROUTE = "iris-drill"


async def test_diff_and_the_reload_agree_on_dropping_a_drill_latched_route(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_section(redis_server.url, "dd", tmp_path / "snap.json",
                          poll_interval="100ms")
    full = routes(p1, p2)
    cfg = write_config(tmp_path, full, state=state)
    dropped = write_config(tmp_path, full[:full.index(f"- name: {ROUTE}")], state=state,
                           name="dropped.yaml")
    h = hdr("killgate:drill killgate:read killgate:rollout")
    async with running_gateway(cfg) as g:
        a = g.admin
        env = {"KILLGATE_ADMIN_URL": a, "KILLGATE_TOKEN": admin_token("killgate:read")}

        async def both() -> tuple[list[str], Any]:
            """The reload's problems with the dropped file (the check the watcher runs),
            `killgate diff`'s answer to it, and the route's override in status."""
            try:
                g.gw._check_reload(load_config(dropped))
                problems: list[str] = []
            except ConfigError as exc:
                problems = [p.message for p in exc.problems]
            res = await acli("diff", str(dropped), env=env)
            if problems:
                assert res.returncode == 1, (problems, res.stdout, res.stderr)
                for m in problems:  # (the same refusal, word for word)
                    assert "the running gateway would refuse it: " + m in res.stderr, \
                        (m, res.stderr)
            else:  # (a change, not refused: before, exit 1 "would refuse")
                assert res.returncode == 2 and "would refuse" not in res.stderr, \
                    (res.returncode, res.stdout, res.stderr)
            st, status = await call(session, "GET", f"{a}/v1/status", None, h)
            assert st == 200, status
            return problems, status["routes"][ROUTE]["override"]

        async def drill() -> str:
            st, opened = await call(session, "POST", f"{a}/v1/drills",
                                    {"kind": "rollback", "route": ROUTE, "reason": "r"}, h)
            assert st == 200, opened
            st, out = await call(session, "POST", f"{a}/v1/drills/{opened['drill']}/inject",
                                 {"to": "v1", "reason": "r"}, h)
            assert st == 200, out
            return str(opened["drill"])

        # 1. an operator's latch only: refused by both
        st, out = await call(session, "PUT", f"{a}/v1/routes/{ROUTE}/weights",
                              {"weights": {"v1": 90, "v2": 10}, "reason": "operator"}, h)
        assert st == 200, out
        problems, ov = await both()
        assert ov["drill"] is None and any("latched at runtime" in m for m in problems), problems

        # 2. a drill's rollback over the operator's latch: refused by both (the restore
        # puts the operator's latch back)
        first = await drill()
        problems, ov = await both()
        assert ov["drill"] == {"id": first, "over_latch": True}, ov
        assert any("latched at runtime" in m for m in problems), problems

        # 3. a drill's rollback only: taken by both
        st, out = await call(session, "POST", f"{a}/v1/drills/{first}/end",
                              {"verdict": "aborted", "reason": "r"}, h)
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/routes/{ROUTE}/release",
                              {"reason": "operator done"}, h)
        assert st == 200, out
        second = await drill()
        problems, ov = await both()
        assert ov["drill"] == {"id": second, "over_latch": False}, ov
        assert problems == []
        # and the reload itself goes live, as diff said it would
        old = g.gw.loaded.digest
        cfg.write_text(dropped.read_text())
        g.gw.request_reload()
        watcher = g.gw.watcher
        assert watcher is not None
        await wait_until(lambda: g.gw.loaded.digest != old or watcher.outcome.last_error,
                         10, what="the reload")
        assert g.gw.loaded.digest != old, watcher.outcome.last_error


async def test_diff_knows_the_recorded_artifact_of_a_version_no_longer_running(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A version a past file had (recorded, immutable) comes back with another artifact:
    the reload refuses it against the record, but diff, knowing only the running versions'
    and the stables' history's artifacts from status, said it was a change (exit 2). Status
    now shows the record (`identities`), and diff refuses it with the reload's words."""
    from tests.test_kill_after_routing_reload import _route

    p1, p3 = await backends(echo_app("v1")), await backends(echo_app("v3"))

    def iris(v3: str | None) -> str:
        text = _route("iris", {"v1": (p1, 100)})
        if v3 is not None:
            text += (f'    - {{name: v3, url: "http://127.0.0.1:{p3}", weight: 0, '
                     f'artifact: "{v3}"}}\n')
        return text

    cfg = write_config(tmp_path, iris("sha256:a3"))
    back = write_config(tmp_path, iris("sha256:a4"), name="back.yaml")
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, iris(None), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10, what="the reload")
        with pytest.raises(ConfigError) as refused:
            g.gw._check_reload(load_config(back))
        [problem] = refused.value.problems
        assert "recorded with sha256:a3" in problem.message, problem
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("diff", str(back), env=env)
        assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
        assert "the running gateway would refuse it: " + problem.message in res.stderr, \
            res.stderr
