"""The versions rollbacks took off, on a real fleet: recorded in the state document like
the overrides, they outlive the rollback's release, Redis losing everything (the instance
re-seeds it) and an instance that never saw the rollback; `/v1/status` and `killgate status`
name them; a rollback to a killed version is a 409 that changes nothing; at weight 0 they
are no spares; a release putting one back, and a reload moving the version a rollback
holds, say so. The rules themselves: test_rolled_off.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.cli.admin import _status_text
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.test_cli import acli
from tests.test_kill_after_routing_reload import _route
from tests.test_kills_unrouted import H
from tests.test_killswitch import redis_state
from tests.test_reload import atomic_write

pytestmark = pytest.mark.timeout(60)


async def _post(s: ClientSession, admin: str, path: str, body: dict) -> tuple[int, dict]:
    async with s.post(f"{admin}{path}?wait=0s", headers=H, json=body) as r:
        return r.status, await r.json()


async def _route_status(s: ClientSession, admin: str) -> tuple[dict, dict]:
    async with s.get(admin + "/v1/status", headers=H) as r:
        assert r.status == 200
        st = await r.json()
    return st, st["routes"]["iris"]


async def test_a_version_rolled_off_stays_off_through_release_redis_loss_and_a_new_instance(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """Before: after `promote v2`, `rollback` (to v1) and `release`, v2 was iris's previous
    stable again, and the next `killgate rollback iris` put it back. Now it is refused 409
    `no_previous_stable` naming v2, on an instance started after Redis lost everything."""
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2")}
    routes = _route("iris", {"v1": (ports["v1"], 100), "v2": (ports["v2"], 0)})
    cfg_a = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"),
                         name="a.yaml")
    cfg_b = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "b"),
                         name="b.yaml")
    async with running_gateway(cfg_a, "a") as a:
        for path, body in (("/v1/routes/iris/promote", {"version": "v2", "reason": "ship"}),
                           ("/v1/routes/iris/rollback", {"reason": "INC-3: v2 is bad"}),
                           ("/v1/routes/iris/release", {"reason": "v1 is the file's"})):
            status, ans = await _post(session, a.admin, path, body)
            assert status == 200, ans
        epoch = a.gw.holder.doc.epoch
        await asyncio.to_thread(redis_server.restart)  # empty: `a` re-seeds it
        await wait_until(lambda: a.gw.holder.doc.epoch != epoch, 10, what="the re-seed")
        async with running_gateway(cfg_b, "b") as b:
            _, route = await _route_status(session, b.admin)
            assert [x["version"] for x in route["rolled_off"]] == ["v2"]
            assert route["rolled_off"][0]["kind"] == "rollback"
            assert route["previous_known_good"] is None and not route["latched"]
            gen = b.gw.holder.doc.generation
            status, ans = await _post(session, b.admin, "/v1/routes/iris/rollback",
                                      {"reason": "v1 is bad too"})
            assert status == 409 and ans["error"]["type"] == "no_previous_stable", ans
            assert "'v2' was rolled off by rollback" in ans["error"]["message"]
            assert b.gw.holder.doc.generation == gen  # (nothing changed)
            # a rollback to a killed version: 409, nothing changed, the kill named
            status, ans = await _post(session, b.admin, "/v1/kill", {
                "scope": "version", "route": "iris", "version": "v2", "reason": "INC-4"})
            assert status == 200, ans
            gen = b.gw.holder.doc.generation
            status, ans = await _post(session, b.admin, "/v1/routes/iris/rollback",
                                      {"to": "v2", "reason": "v1 is worse"})
            assert status == 409 and ans["error"]["type"] == "target_killed", ans
            assert "killgate unkill --route iris --version v2" in ans["error"]["message"]
            assert b.gw.holder.doc.generation == gen and "iris" not in b.gw.holder.doc.overrides
            st, route = await _route_status(session, b.admin)
            assert [x["version"] for x in route["rolled_off"]] == ["v2"]
            text = _status_text(st)
            assert "ROLLED OFF: route iris: v2 (rollback by ops" in text


async def _put(s: ClientSession, admin: str, path: str, body: dict) -> tuple[int, dict]:
    async with s.put(f"{admin}{path}?wait=0s", headers=H, json=body) as r:
        return r.status, await r.json()


async def _answers(s: ClientSession, gw: str, n: int = 24) -> set[str]:
    """The versions answering `n` requests to iris (else the status)."""
    out = set()
    for _ in range(n):
        async with s.post(gw + "/v2/models/iris/infer", json={}) as r:
            out.add((await r.json())["version"] if r.status == 200 else f"{r.status}")
    return out


async def test_a_version_rolled_off_is_no_spare_once_the_rollback_is_released(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """Before: after `promote v2`, `rollback` (to v1) and `release`, or a `weights` override
    replacing the rollback, v2 (weight 0 in the file) was a spare again: with v1 killed it
    took half the route's traffic (all of it, were v0 not there). Now v0 answers; v2 serves
    again once an operator names it (`weights` giving it traffic)."""
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v0", "v2")}
    routes = _route("iris", {"v1": (ports["v1"], 100), "v0": (ports["v0"], 0),
                             "v2": (ports["v2"], 0)})
    cfg = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg, "a") as a:
        for path, body in (("/v1/routes/iris/promote", {"version": "v2", "reason": "ship"}),
                           ("/v1/routes/iris/rollback", {"reason": "INC-5: v2 is bad"}),
                           ("/v1/routes/iris/release", {"reason": "v1 is the file's"}),
                           ("/v1/kill", {"scope": "version", "route": "iris", "version": "v1",
                                         "reason": "INC-6: v1 is bad too"})):
            status, ans = await _post(session, a.admin, path, body)
            assert status == 200, ans
        assert await _answers(session, a.url) == {"v0"}
        # a `weights` override not naming v2 (v1 all, killed) leaves it off too
        status, ans = await _put(session, a.admin, "/v1/routes/iris/weights",
                                  {"weights": {"v1": 100}, "reason": "v1 only"})
        assert status == 200, ans
        assert await _answers(session, a.url) == {"v0"}
        status, ans = await _put(session, a.admin, "/v1/routes/iris/weights",
                                  {"weights": {"v1": 90, "v2": 10}, "reason": "v2 fixed"})
        assert status == 200, ans
        assert await _answers(session, a.url) == {"v2"}


async def test_a_release_putting_back_a_stable_rolled_off_says_so(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """Before: the file's stable v2, rolled off as bad by a rollback (to v1), took all of
    iris's traffic again at `release` with nothing said. The release is still done (it is
    how an operator returns to the file), and its answer (`warnings`) and `killgate
    release` name the version, who rolled it off and when."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _route("iris", {"v2": (p2, 100), "v1": (p1, 0)}))
    rollback = {"to": "v1", "reason": "INC-7: v2 is bad"}
    async with running_gateway(cfg) as g:
        status, ans = await _post(session, g.admin, "/v1/routes/iris/rollback", rollback)
        assert status == 200, ans
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": H["Authorization"][7:]}
        res = await acli("release", "iris", "--reason", "back to the file", env=env)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines[0] == "released iris to its config file", res.stdout
        assert lines[1].startswith("WARNING: v2 was rolled off by ops (rollback) at "), lines
        assert "it the route's stable (the file's) again, 100 % of" in lines[1]
        assert "killgate rollback iris --to VERSION" in lines[1]
        assert await _answers(session, g.url, 4) == {"v2"}  # (done: said, not refused)
        status, ans = await _post(session, g.admin, "/v1/routes/iris/rollback", rollback)
        assert status == 200, ans
        status, ans = await _post(session, g.admin, "/v1/routes/iris/release", {"reason": "r"})
        assert status == 200 and len(ans["warnings"]) == 1, ans
        assert ans["warnings"][0].startswith("v2 was rolled off by ops (rollback) at ")
        # v2 named (given traffic): no longer rolled off, and its release warns of nothing
        status, ans = await _put(session, g.admin, "/v1/routes/iris/weights",
                                 {"weights": {"v2": 100}, "reason": "v2 fixed"})
        assert status == 200, ans
        status, ans = await _post(session, g.admin, "/v1/routes/iris/release", {"reason": "r"})
        assert status == 200 and "warnings" not in ans, ans


@pytest.mark.parametrize("how", ["rollback", "weights"])
async def test_a_reload_moving_the_version_a_rollback_holds_warns(
        tmp_path: Path, backends, session: ClientSession,
        caplog: pytest.LogCaptureFixture, how: str) -> None:
    """Before: a reload giving v1, which a latched rollback serves, another url (no
    artifact) sent all of iris's traffic to that new deployment without a word. Now it is
    applied (a reload never undoes a latch) with a WARNING logged and the reload's result
    (`config.warnings` in /v1/status, `killgate status`) saying so. So is one moving the
    version an operator's weights override pins (hostile GitOps review: only rollbacks
    were said; a `weights` override is how many operators roll back by hand)."""
    caplog.set_level(logging.INFO, "killgate")
    p1, p2, p3 = [await backends(echo_app(n)) for n in ("v1", "v2", "v1-new")]
    routes = _route("iris", {"v2": (p2, 100), "v1": (p1, 0)})
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        if how == "rollback":
            status, ans = await _post(session, g.admin, "/v1/routes/iris/rollback",
                                      {"to": "v1", "reason": "INC-8: v2 is bad"})
        else:
            status, ans = await _put(session, g.admin, "/v1/routes/iris/weights",
                                     {"weights": {"v1": 100, "v2": 0},
                                      "reason": "INC-8: v2 is bad"})
        assert status == 200, ans
        text = cfg.read_text()
        atomic_write(cfg, text.replace(f"127.0.0.1:{p1}", f"127.0.0.1:{p3}"))
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 10,
                         what="the reload")
        st, _ = await _route_status(session, g.admin)
        [warning] = st["config"]["warnings"]
        held = "rollback" if how == "rollback" else "weights override"
        assert warning.startswith(f"route 'iris': version 'v1', held by a {held} (ops, ")
        assert f"moves from http://127.0.0.1:{p1} to http://127.0.0.1:{p3}" in warning
        assert "100 % of the route's traffic" in warning
        assert f"RELOAD WARNING: {warning}" in _status_text(st)
        [logged] = [r for r in caplog.records if r.getMessage() == "rollback_target_moved"]
        assert logged.levelno == logging.WARNING
        assert await _answers(session, g.url, 4) == {"v1-new"}
        # the next reload that moves nothing held clears it
        atomic_write(cfg, text.replace(f"127.0.0.1:{p1}", f"127.0.0.1:{p3}")
                     .replace("weight: 100}", "weight: 90}"))
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 2, 10,
                         what="the second reload")
        st, _ = await _route_status(session, g.admin)
        assert st["config"]["warnings"] == []
