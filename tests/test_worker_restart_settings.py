"""`serve --workers N`: settings that apply at a restart (`state`, `server`, `log`,
`telemetry`, the listeners) apply at the group's restart, not at one worker's.

A reload puts the file's routes live in every worker and leaves those settings as the group
started (config.restart_required). A worker the supervisor restarts after a crash starts
from the group's bytes (workerconfig.py), which are the reloaded file's: it took the new
`state` section, so one worker of the group ran against another store (another Redis, prefix
or key) than its siblings, sharing their ports: a kill made through the admin port (any
worker answers it) reached only the workers on the same store, and the others served the
killed route, each ready."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession

from tests.conftest import wait_until
from tests.test_killswitch import auth
from tests.test_reload import atomic_write
from tests.test_worker_config import PATH, _group, _to_v2

pytestmark = [pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
              pytest.mark.timeout(90)]


async def test_a_restarted_worker_keeps_the_groups_store_after_a_reload_changed_it(
        tmp_path: Path, backends, gateway_procs) -> None:
    g, cfg, p1, p2 = await _group(tmp_path, backends, gateway_procs, watch=False)
    text = cfg.read_text()
    assert f"path: {tmp_path}/store.json" in text
    moved = _to_v2(text, p1, p2).replace(f"path: {tmp_path}/store.json",
                                         f"path: {tmp_path}/other-store.json")
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        atomic_write(cfg, moved)
        g.gw.signal(signal.SIGHUP)
        await g.until(s, "v2", "the SIGHUP reload")  # routes live; `state` at a restart
        await g.restart_one()
        assert await g.versions(s) == {"v2": 40}  # the reloaded routes, as its siblings

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
        assert not (tmp_path / "other-store.json").exists()
        g.alive()
    assert g.gw.stop() == 0, g.gw.output()


async def test_a_restarted_worker_says_restart_required_as_its_siblings_do(
        tmp_path: Path, backends, gateway_procs) -> None:
    """The worker restarted after such a reload runs the group's bytes with the settings the
    group started on, as its siblings do; yet its /v1/status said nothing was waiting for a
    restart (its watcher compared the config it started on with itself), while they said
    RESTART REQUIRED for state: whichever worker answered, an operator read that the new
    store was in force, or not (hostile GitOps review)."""
    g, cfg, p1, p2 = await _group(tmp_path, backends, gateway_procs, watch=False)
    moved = _to_v2(cfg.read_text(), p1, p2).replace(f"path: {tmp_path}/store.json",
                                                    f"path: {tmp_path}/other-store.json")
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        atomic_write(cfg, moved)
        g.gw.signal(signal.SIGHUP)
        await g.until(s, "v2", "the SIGHUP reload")
        await g.restart_one()
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
    assert g.gw.stop() == 0, g.gw.output()
