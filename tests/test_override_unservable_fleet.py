"""Two instances on one redis-server, whose files differ during a deploy: A's file no
longer has v1, B's still does. A rollback to v1 made through B latched a route A cannot
serve as asked; A used to give the file's stable (v2, the version just rolled back from)
all of it, silently. Now A serves no version of the route (its fallback, else a 503 that
names v1 and says how it ends), /v1/status, `killgate status` and the gauge say so, one
warning is logged, and a `release` hands A back to its file's weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_cli import acli
from tests.test_kill_after_routing_reload import _route
from tests.test_kills_unrouted import H, _status
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)


async def _gauge(s: ClientSession, admin: str) -> str:
    async with s.get(admin + "/metrics") as r:
        (line,) = [x for x in (await r.text()).splitlines()
                   if x.startswith("killgate_overrides_unservable ")]
        return line.split()[1]


async def _answers(s: ClientSession, url: str, n: int = 10) -> set[tuple[int, str, str]]:
    seen = set()
    for i in range(n):
        async with s.get(f"{url}/v2/models/iris/x", headers={"x-user": str(i)}) as r:
            seen.add((r.status, r.headers.get("x-killgate-version", "-"),
                      r.headers.get("x-killgate-decision", "-")))
    return seen


@pytest.mark.parametrize("fallback", [False, True])
async def test_a_rollback_to_a_version_this_file_lacks_serves_none_until_released(
        tmp_path: Path, backends, redis_server, session: ClientSession,
        caplog: pytest.LogCaptureFixture, fallback: bool) -> None:
    caplog.set_level(logging.INFO, "killgate")
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2", "v3")}
    fb = "  fallback: {status: 200, json: {answer: cached}}\n" if fallback else ""
    cfg_a = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                   "v3": (ports["v3"], 0)}, fb),
                         state=redis_state(redis_server, tmp_path, "a"), name="a.yaml")
    cfg_b = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                   "v1": (ports["v1"], 0)}, fb),
                         state=redis_state(redis_server, tmp_path, "b"), name="b.yaml")
    async with running_gateway(cfg_a, "a") as a, running_gateway(cfg_b, "b") as b:
        assert await _answers(session, a.url) == {(200, "v2", "weighted")}
        async with session.post(f"{b.admin}/v1/routes/iris/rollback", headers=H,
                                json={"to": "v1", "reason": "INC-7: v2 is bad"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: "iris" in a.gw.holder.doc.overrides, 10,
                         what="A to apply the rollback")
        assert await _answers(session, b.url) == {(200, "v1", "weighted")}
        # A: not v2 (the version rolled back from), whatever the request asks for
        served = await _answers(session, a.url)
        if fallback:
            assert served == {(200, "-", "fallback")}, served
        else:
            assert served == {(503, "-", "fallback")}, served
            async with session.get(f"{a.url}/v2/models/iris/x",
                                   headers={"x-killgate-pin": "v2"}) as r:
                body = await r.json()
                assert r.status == 503, body
            err = body["error"]
            assert err["type"] == "unavailable" and err["override_unservable"] == ["v1"], err
            assert "'v1'" in err["message"] and "killgate release iris" in err["message"], err
        st = await _status(session, a.admin)
        assert st["routes"]["iris"]["override_unservable"] == ["v1"]
        assert st["routes"]["iris"]["latched"] is True
        assert (await _status(session, b.admin))["routes"]["iris"]["override_unservable"] is None
        assert await _gauge(session, a.admin) == "1.0"
        assert await _gauge(session, b.admin) == "0.0"
        env = {"KILLGATE_ADMIN_URL": a.admin, "KILLGATE_TOKEN": H["Authorization"][7:]}
        human = await acli("status", env=env)
        assert human.returncode == 0, human.stderr
        assert "NOT SERVING: route iris is latched to v1" in human.stdout, human.stdout
        assert "killgate release iris" in human.stdout, human.stdout
        warned = [r for r in caplog.records if r.getMessage() == "override_unservable"]
        assert [r.levelno for r in warned] == [logging.WARNING]  # once: A, not per request

        # released (through A): A serves its file's weights again, B its own
        async with session.post(f"{a.admin}/v1/routes/iris/release", headers=H,
                                json={"reason": "INC-7 over"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: "iris" not in b.gw.holder.doc.overrides, 10,
                         what="B to apply the release")
        assert await _answers(session, a.url) == {(200, "v2", "weighted")}
        assert (await _status(session, a.admin))["routes"]["iris"]["override_unservable"] is None
        assert await _gauge(session, a.admin) == "0.0"
        assert "NOT SERVING" not in (await acli("status", env=env)).stdout
        assert len([r for r in caplog.records if r.getMessage() == "override_unservable"]) == 1
