"""The data plane stays closed until the kill state is known (routing.STATE_UNKNOWN).

A fresh instance that can neither reach the store nor read a snapshot does not know what
the fleet has killed: routing on an empty state document would silently lift every kill.
It answers 503 `state_unknown` (or the route's fallback) until the state loads, unless
`state.ready_without_state: true` chooses availability. Real `killgate serve` processes,
a real redis-server behind a forwarder (tests/faultproxy.py), real backends.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.configfile import load_config
from gateway.control.table import TableHolder
from gateway.domain.routing import KILLED, STATE_UNKNOWN
from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.domain.tablebuild import build_table
from tests.backends import echo_app
from tests.conftest import free_port, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder
from tests.redisha import redis_state_yaml, state_key_env
from tests.test_killswitch import kill, redis_state

INFER = "/v2/models/iris/infer"
FALLBACK_ROUTE = textwrap.dedent("""\
    - name: fb
      match: {path_prefix: /v2/models/fb}
      stable: v1
      versions:
        - {name: v1, url: "http://127.0.0.1:PORT", weight: 100}
      fallback:
        status: 200
        json: {answer: canned}
    """)


def _routes(p1: int, p2: int) -> str:
    # v1 takes every request unless it is killed; v2 is the only way to a 200 then
    return two_versions(p1, p2, 100, 0) + FALLBACK_ROUTE.replace("PORT", str(p1))


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; -1 while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
    except OSError:
        return -1, {}, b""


def _metric(admin: str, name: str) -> float:
    code, _, body = _get(admin + "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


# ------------------------------------------------------------------ the pure parts


def test_an_unknown_state_closes_every_route_before_any_kill(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, _routes(1, 2))).config
    doc = StateDoc(generation=3, kills={"global": KillFlag("global", None, None, "a", "r", "t", 3)})
    table = build_table(cfg, StateDoc(), state_unknown=True)
    for plan in table.routes:
        assert plan.killed == STATE_UNKNOWN
        assert plan.choose("user", None, lambda: 0.5) == (None, KILLED)
        assert set(plan.effective_weights().values()) == {0.0}
    # it outranks a global kill and fail_closed: the answer says why nothing serves
    assert build_table(cfg, doc, fail_closed=True, state_unknown=True).by_name["iris"].killed \
        == STATE_UNKNOWN
    assert build_table(cfg, doc).by_name["iris"].killed == "global"
    assert build_table(cfg, StateDoc()).by_name["iris"].killed is None


def test_the_holder_opens_once_and_keeps_the_state_applied_while_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.control.table as table_mod

    holder = TableHolder(load_config(write_config(tmp_path, _routes(1, 2))), state_unknown=True)
    seen: list[Any] = []
    holder.listen(lambda old, new: seen.append(new))
    flag = KillFlag("version", "iris", "v1", "a", "r", "t", 1)
    assert holder.apply_doc(StateDoc(generation=1, kills={"version:iris:v1": flag}))
    assert holder.table.by_name["iris"].killed == STATE_UNKNOWN  # still closed
    before = holder.held
    monkeypatch.setattr(table_mod, "build_table", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        holder.state_loaded()
    assert holder.held is before and holder.state_unknown  # a failed build changed nothing
    monkeypatch.undo()
    assert holder.state_loaded() is True
    plan = holder.table.by_name["iris"]
    assert plan.killed is None and plan.excluded == {"v1": "killed"}  # the kill, at once
    assert holder.state_loaded() is False and len(seen) == 2  # one way, one swap
    assert TableHolder(holder.loaded).state_unknown is False  # a plain holder starts open


# ------------------------------------------------------------------ a real process


async def test_a_fresh_instance_without_redis_or_snapshot_answers_state_unknown(
        tmp_path: Path, backends, redis_server, gateway_procs) -> None:
    """Redis unreachable and no snapshot: the data port answers 503 state_unknown (the
    fallback where the route has one). Redis comes up holding a kill of v1: from the first
    answer that is not state_unknown, v1 gets nothing."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    env = state_key_env()
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        # an instance of the fleet kills v1 (stored in Redis) and goes
        old = write_config(tmp_path, _routes(p1, p2), name="old.yaml", state=redis_state_yaml(
            f"redis://127.0.0.1:{fwd.port}/0", f"{tmp_path}/old-snap.json", "kgunknown"))
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            async with running_gateway(old) as g, ClientSession() as s:
                await kill(s, g.admin, scope="version", route="iris", version="v1")

        fwd.point(None)  # Redis unreachable from here on
        snap = tmp_path / "new-snap.json"
        cfg = write_config(
            tmp_path, _routes(p1, p2), name="new.yaml", listen=f"127.0.0.1:{free_port()}",
            admin=f"127.0.0.1:{free_port()}", state=redis_state_yaml(
                f"redis://127.0.0.1:{fwd.port}/0", str(snap), "kgunknown"))
        gw = gateway_procs(cfg, env=env)
        answers: list[int] = []

        async def closed() -> bool:
            code, headers, body = await asyncio.to_thread(_get, gw.url + INFER)
            answers.append(code)
            assert code in (-1, 503), (code, body)  # never an answer routed on nothing
            if code == 503:
                assert json.loads(body)["error"]["type"] == "state_unknown", body
                assert headers["retry-after"] == "1"
                assert headers["x-killgate-route"] == "iris"
                assert headers["x-killgate-decision"] == "fallback"
                assert "x-killgate-version" not in headers
            return answers.count(503) >= 3

        await wait_until(closed, 30, 0.05, "the data port, closed")
        code, headers, body = await asyncio.to_thread(_get, gw.url + "/v2/models/fb/x")
        assert (code, json.loads(body)) == (200, {"answer": "canned"})  # the route's fallback
        assert headers["x-killgate-decision"] == "fallback"
        code, _, body = await asyncio.to_thread(_get, gw.url + "/elsewhere")
        assert code == 404 and json.loads(body)["error"]["type"] == "no_route"
        assert (await asyncio.to_thread(_get, gw.admin + "/readyz"))[0] == 503
        assert await asyncio.to_thread(_metric, gw.admin,
                                       "killgate_state_unknown_answers_total") >= 4
        assert not snap.exists()

        fwd.point(redis_server.port)
        served: list[str] = []
        while len(served) < 5:
            code, headers, body = await asyncio.to_thread(_get, gw.url + INFER)
            if code == 503:
                assert json.loads(body)["error"]["type"] == "state_unknown", body
                assert not served  # once open, never closed again
                await asyncio.sleep(0.02)
                continue
            assert code == 200, (code, body)
            served.append(headers["x-killgate-version"])
            assert headers["x-killgate-decision"] == "failover"
        assert served == ["v2"] * 5  # the kill was in force from the first routed answer
        assert (await asyncio.to_thread(_get, gw.admin + "/readyz"))[0] == 200
        assert gw.stop() == 0, gw.output()
        out = gw.output()
        assert "503 state_unknown until the kill state is loaded" in out
        loaded = [ln for ln in out.splitlines() if "kill_state_loaded" in ln]
        assert len(loaded) == 1 and 'source="store"' in loaded[0], out
    finally:
        await fwd.close()


# ------------------------------------------------------------------ what stays open


async def test_ready_without_state_serves_on_the_config_alone(tmp_path: Path, backends,
                                                              redis_server, session) -> None:
    """The explicit availability-over-safety choice: today's behaviour."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, extra="  ready_without_state: true\n")
    cfg = write_config(tmp_path, _routes(p1, p2), state=state)
    redis_server.kill()
    async with running_gateway(cfg) as g:
        assert not g.gw.sync.connected and not g.gw.sync.from_snapshot
        async with session.get(g.url + INFER) as r:
            assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
        assert g.gw.metrics.get("killgate_state_unknown_answers_total") == 0


async def test_a_snapshot_counts_as_known_state(tmp_path: Path, backends, redis_server,
                                                session) -> None:
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _routes(p1, p2), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v1")
        await wait_until(lambda: "version:iris:v1" in (tmp_path / "snapshot-a.json").read_text()
                         if (tmp_path / "snapshot-a.json").exists() else False, 5)
    redis_server.kill()
    async with running_gateway(cfg) as g:
        assert g.gw.sync.from_snapshot and not g.gw.sync.connected
        async with session.get(g.url + INFER) as r:  # the very first request
            assert r.status == 200 and r.headers["x-killgate-version"] == "v2"


async def test_the_local_backend_is_known_at_once(tmp_path: Path, backends, session) -> None:
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _routes(p1, p2))  # state.backend: local
    async with running_gateway(cfg) as g:
        assert not g.gw.holder.state_unknown and g.gw.ready
        await kill(session, g.admin, scope="version", route="iris", version="v1")
    # a restart reads the store's files
    async with running_gateway(cfg) as g, session.get(g.url + INFER) as r:
        assert r.status == 200 and r.headers["x-killgate-version"] == "v2"
