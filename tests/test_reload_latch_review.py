"""A reload must not silently undo a latched runtime override (hostile config review):
a file that drops the version a rollback latched as stable (or one the latched weights
send traffic to) is refused, visibly, and the override keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)

ROLLOUT = "killgate:rollout killgate:read"


async def _served(session: ClientSession, url: str, n: int = 20) -> set[str]:
    seen = set()
    for i in range(n):
        async with session.get(f"{url}/v2/models/iris/x", headers={"x-user": str(i)}) as r:
            seen.add(f"{r.status} {r.headers.get('x-killgate-version')}")
    return seen


@pytest.mark.parametrize("how", ["rollback", "weights"])
async def test_a_reload_that_drops_the_latched_version_is_refused(
        tmp_path: Path, backends, session: ClientSession, how: str) -> None:
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2", "v3")}
    cfg = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                 "v1": (ports["v1"], 0)}))
    async with running_gateway(cfg) as g:
        # v2 (the file's stable) misbehaves: the operator latches v1 at runtime
        if how == "rollback":
            req = session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                               json={"to": "v1", "reason": "INC-1: v2 is bad"})
        else:
            req = session.put(f"{g.admin}/v1/routes/iris/weights", headers=auth(ROLLOUT),
                              json={"weights": {"v1": 100, "v2": 0}, "reason": "INC-1"})
        async with req as r:
            assert r.status == 200, await r.text()
        assert await _served(session, g.url) == {"200 v1"}
        # a pipeline deploys a commit written before the incident: v1 retired, v3 added
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                              "v3": (ports["v3"], 0)}),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None
                         or g.gw.loaded.digest != old, 10)
        assert g.gw.loaded.digest == old, await _served(session, g.url)  # (v2 before the fix)
        err = g.gw.watcher.outcome.last_error
        assert "routes[0].versions" in err and "'v1'" in err and "release" in err, err
        assert await _served(session, g.url) == {"200 v1"}


async def test_a_start_on_a_file_that_drops_the_latched_version_is_refused_by_name(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The same file at a restart: `killgate serve` exits 1 naming the version and the way
    out, instead of serving v2, the version rolled back from."""
    import asyncio
    import os
    import sys

    from tests.conftest import SECRET

    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2")}
    cfg = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                 "v1": (ports["v1"], 0)}))
    async with running_gateway(cfg) as g:
        r = await session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                               json={"to": "v1", "reason": "INC-1: v2 is bad"})
        assert r.status == 200, await r.text()
        r.release()
    cfg.write_text(write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100)}),
                                name="next.yaml").read_text())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "-c", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KILLGATE_TEST_SECRET": SECRET})
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = err.decode()
    assert proc.returncode == 1, text[-2000:]
    assert "killgate: config: routes[0].versions: version 'v1' of route 'iris' is latched" \
        in text and "killgate release iris" in text, text[-2000:]


async def test_diff_says_what_the_latch_holds_and_what_a_reload_would_refuse(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """`killgate diff` (review before merge) compared files only: it showed a weight
    change on a latched route that would change nothing, and passed a file the running
    gateway would refuse (171abfa)."""
    from tests.conftest import admin_token
    from tests.test_cli import acli

    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2", "v3")}
    cfg = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                 "v1": (ports["v1"], 0)}))
    drop = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                  "v3": (ports["v3"], 0)}), name="drop.yaml")
    keep = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 50),
                                                  "v1": (ports["v1"], 50)}), name="keep.yaml")
    async with running_gateway(cfg) as g:
        r = await session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                               json={"to": "v1", "reason": "INC-1: v2 is bad"})
        assert r.status == 200, await r.text()
        r.release()
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("diff", str(drop), env=env)
        assert res.returncode == 1, res.stdout
        assert "routes[0].versions: the running gateway would refuse it: version 'v1'" \
            in res.stderr, res.stderr
        res = await acli("diff", str(keep), env=env)
        assert res.returncode == 2, res.stderr
        assert "latched by a runtime override" in res.stdout and res.stdout.rstrip().endswith(
            "iris"), res.stdout
