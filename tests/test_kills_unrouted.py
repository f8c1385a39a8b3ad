"""A config that no longer routes to a killed name (removed or renamed) says so: the kill
stops nothing while the name is gone, so /v1/status marks it `routed: false`, every instance
logs `kills_unrouted`, and the reload's audit event names it. The name back, the kill
is in force again (README "Trust")."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config
from tests.test_cli import acli
from tests.test_reload import atomic_write

H = bearer("killgate:admin", "ops", 10800)


async def _status(s: ClientSession, admin: str) -> dict:
    async with s.get(admin + "/v1/status", headers=H) as r:
        assert r.status == 200
        return await r.json()


async def _post(s: ClientSession, url: str, body: dict) -> None:
    async with s.post(url, headers=H, json=body) as r:
        assert r.status == 200, await r.text()


async def _unrouted_gauge(s: ClientSession, admin: str) -> str:
    async with s.get(admin + "/metrics") as r:
        (line,) = [x for x in (await r.text()).splitlines()
                   if x.startswith("killgate_kills_unrouted ")]
        return line.split()[1]


async def _config(tmp_path: Path, backends) -> Path:  # type: ignore[no-untyped-def]
    """iris: v1 90 / v2 10, each on its own echo backend."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    return write_config(tmp_path, two_versions(p1, p2, 90, 10))


async def test_a_renamed_killed_route_and_version_are_named_unrouted(
        tmp_path: Path, backends, session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "killgate")
    cfg = await _config(tmp_path, backends)
    original = cfg.read_text()
    async with running_gateway(cfg) as g:
        await _post(session, g.admin + "/v1/kill",
                    {"scope": "version", "route": "iris", "version": "v2", "reason": "bad"})
        await _post(session, g.admin + "/v1/kill",
                    {"scope": "route", "route": "iris", "reason": "all bad"})
        kills = {k["scope"]: k for k in (await _status(session, g.admin))["kills"]}
        assert kills["route"]["routed"] is True and kills["version"]["routed"] is True
        assert not [r for r in caplog.records if r.getMessage() == "kills_unrouted"]
        assert await _unrouted_gauge(session, g.admin) == "0.0"

        # the route renamed, its v2 renamed v3: both kills stop nothing now
        atomic_write(cfg, original.replace("name: iris", "name: iris2")
                     .replace("{name: v2,", "{name: v3,"))
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 10,
                         what="the reload")
        async with session.get(g.url + "/v2/models/iris/x") as r:
            assert r.status == 200  # (what README says: served under the new name)
        kills = {k["scope"]: k for k in (await _status(session, g.admin))["kills"]}
        assert kills["route"]["routed"] is False and kills["version"]["routed"] is False
        assert await _unrouted_gauge(session, g.admin) == "2.0"  # (KillgateKillNotRouted)
        [warned] = [r for r in caplog.records if r.getMessage() == "kills_unrouted"]
        assert warned.levelno == logging.WARNING
        assert "route:iris" in str(warned.__dict__) and "version:iris:v2" in str(warned.__dict__)

        async def reloads() -> list[dict]:
            async with session.get(g.admin + "/v1/audit?limit=20", headers=H) as r:
                events = (await r.json())["events"]
            return [e for e in events if e["action"] == "config.reload"]

        await wait_until(reloads, 10, 0.05, "the reload's audit event")
        [ev] = await reloads()
        assert ev["after"]["kills_unrouted"] == ["route:iris", "version:iris:v2"]
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": H["Authorization"][7:]}
        human = await acli("status", env=env)
        assert human.returncode == 0, human.stderr
        assert ("NOT ROUTED: the config has no version iris/v2, route iris: these kills stop "
                "nothing" in human.stdout or "NOT ROUTED: the config has no route iris, version "
                "iris/v2: these kills stop nothing" in human.stdout), human.stdout

        # the names back: the kills are in force again, routed, and nothing new is warned
        atomic_write(cfg, original)
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 2, 10,
                         what="the second reload")
        async with session.get(g.url + "/v2/models/iris/x") as r:
            assert r.status == 503
        kills = {k["scope"]: k for k in (await _status(session, g.admin))["kills"]}
        assert kills["route"]["routed"] is True and kills["version"]["routed"] is True
        assert len([r for r in caplog.records if r.getMessage() == "kills_unrouted"]) == 1
        assert "NOT ROUTED" not in (await acli("status", env=env)).stdout
        assert await _unrouted_gauge(session, g.admin) == "0.0"
        await wait_until(lambda: reloads(), 10, 0.05)
        assert all("kills_unrouted" not in e["after"] for e in (await reloads())
                   if e["after"]["digest"] != ev["after"]["digest"])


async def test_an_instance_starting_on_a_config_without_a_killed_name_warns(
        tmp_path: Path, backends, session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "killgate")
    cfg = await _config(tmp_path, backends)
    original = cfg.read_text()
    async with running_gateway(cfg) as g:
        await _post(session, g.admin + "/v1/kill",
                    {"scope": "version", "route": "iris", "version": "v2", "reason": "bad"})
    cfg.write_text(original.replace("{name: v2,", "{name: v3,"))  # the state file keeps the kill
    caplog.clear()
    async with running_gateway(cfg) as g:
        [warned] = [r for r in caplog.records if r.getMessage() == "kills_unrouted"]
        assert "version:iris:v2" in str(warned.__dict__)
        [kill] = (await _status(session, g.admin))["kills"]
        assert kill["routed"] is False


async def test_a_kill_arriving_by_state_sync_for_a_name_this_config_lacks_warns(
        tmp_path: Path, backends, session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """Two instances on one state, one of them on a config without v2 (a rolling deploy of
    the rename; or one started while the store was out of reach, that gets the kills only
    later): a kill of iris/v2 made on the other reaches it by state sync and stops nothing
    there. It logged nothing (only a reload or a start looked): now it warns as they do."""
    caplog.set_level(logging.INFO, "killgate")
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 90, 10))
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(cfg.read_text().replace("{name: v2,", "{name: v3,"))
    async with running_gateway(cfg, "a") as a, running_gateway(renamed, "b") as b:
        assert not [r for r in caplog.records if r.getMessage() == "kills_unrouted"]
        await _post(session, a.admin + "/v1/kill",
                    {"scope": "version", "route": "iris", "version": "v2", "reason": "bad"})

        async def b_has_it() -> bool:
            return bool((await _status(session, b.admin))["kills"])

        await wait_until(b_has_it, 10, 0.05, "the kill reaching b")
        [kill] = (await _status(session, b.admin))["kills"]
        assert kill["routed"] is False
        [warned] = [r for r in caplog.records if r.getMessage() == "kills_unrouted"]
        assert "version:iris:v2" in str(warned.__dict__)
