"""`serve --workers N`: settings that apply at a restart (`state`, `server`, `log`,
`telemetry`, the listeners) apply at the group's restart, not at one worker's.

A reload puts the file's routes live in every worker and leaves those settings as the group
started (config.restart_required). A worker the supervisor restarts after a crash starts
from the group's bytes (workerconfig.py), which are the reloaded file's: it took the new
`state` section, so one worker of the group ran against another store (another Redis, prefix
or key) than its siblings, sharing their ports: a kill made through the admin port (any
worker answers it) reached only the workers on the same store, and the others served the
killed route, each ready.

Both tests start from the same rig, made once (a module fixture): the group's file moved
the store and routed to v2, a SIGHUP reloaded it, and a worker was restarted since. The
one that only reads (status) runs first; the one that kills stops the group."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession

from tests.conftest import wait_until
from tests.sharedgroup import Shared
from tests.test_killswitch import auth
from tests.test_reload import atomic_write
from tests.test_worker_config import PATH, _to_v2

pytestmark = [pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
              pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """A `serve --workers 2` group whose file moved its store (and its routes to v2), then
    SIGHUP: the routes live, `state` at a restart; then a worker restarted (crashed)."""
    rig = Shared(tmp_path_factory.mktemp("moved"))
    try:
        g = rig.take()
        cfg = g.gw.config
        text = cfg.read_text()
        assert f"path: {cfg.parent}/store.json" in text
        moved = _to_v2(text, rig.p1, rig.p2).replace(f"path: {cfg.parent}/store.json",
                                                     f"path: {cfg.parent}/other-store.json")

        async def reload_then_restart() -> None:
            async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                atomic_write(cfg, moved)
                g.gw.signal(signal.SIGHUP)
                await g.until(s, "v2", "the SIGHUP reload")  # routes live; `state` at a restart
                await g.restart_one()
                assert await g.versions(s) == {"v2": 40}  # the reloaded routes, as its siblings

        asyncio.run(reload_then_restart())
        yield rig
    finally:
        problem = rig.close()
    assert not problem, problem


async def test_a_restarted_worker_says_restart_required_as_its_siblings_do(
        moved: Shared) -> None:
    """The worker restarted after such a reload runs the group's bytes with the settings the
    group started on, as its siblings do; yet its /v1/status said nothing was waiting for a
    restart (its watcher compared the config it started on with itself), while they said
    RESTART REQUIRED for state: whichever worker answered, an operator read that the new
    store was in force, or not (hostile GitOps review)."""
    g = moved.g
    g.alive()
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        seen: dict[str, list[str]] = {}

        async def both_answered() -> bool:
            async with s.get(g.gw.admin + "/v1/status", headers=auth("killgate:read")) as r:
                st = await r.json()
            seen[st["instance"]] = st["config"]["restart_required"]
            return len(seen) >= 2 and all("state" in v for v in seen.values())

        # (before the fix: the restarted worker's was [] for good)
        with contextlib.suppress(AssertionError):
            await wait_until(both_answered, 10, 0.02, "both workers saying so")
        assert len(seen) == 2 and all("state" in v for v in seen.values()), seen
        g.alive()


async def test_a_restarted_worker_keeps_the_groups_store_after_a_reload_changed_it(
        moved: Shared) -> None:
    g = moved.g
    g.alive()
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(4):  # (whichever worker answers: a kill is the group's)
            async with s.post(g.gw.admin + "/v1/kill?wait=2s", headers=auth(),
                              json={"scope": "route", "route": "iris",
                                    "reason": "restart settings"}) as r:
                assert r.status == 200, await r.text()

        async def all_killed() -> bool:
            codes = []
            for _ in range(40):  # fresh connections: both workers answer some
                async with s.get(g.gw.url + PATH) as r:
                    codes.append(r.status)
            return codes == [503] * 40

        await wait_until(all_killed, 10, 0.05, "every worker enforcing the kill")
        assert not (g.gw.config.parent / "other-store.json").exists()
        g.alive()
    assert g.gw.stop() == 0, g.gw.output()
