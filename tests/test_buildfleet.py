"""Which instance of a fleet mid-upgrade runs which build, where an SRE looks during the
upgrade (review revupgrade47 gave `killgate --version` and killgate_build_info a `build`,
but `GET /v1/fleet`, `killgate status`'s INSTANCES table and the console said nothing of
it per instance). Two real `killgate serve` processes from copies of the package that
differ by one line (test_buildid.py's), sharing one store, redis (signed heartbeats) or
the local one (heartbeat files): each instance's build is said by both, and the table says
that the fleet runs two."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp import ClientSession
from selenium.webdriver.common.by import By

from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, two_versions, wait_until, write_config
from tests.console_rig import Browser
from tests.test_buildid import _tree, _version
from tests.test_cli import acli
from tests.test_killswitch import token

pytestmark = pytest.mark.timeout(120)

READ = {"KILLGATE_TOKEN": token("killgate:read")}


def _state(tmp: Path, backend: str, redis: RedisServer | None) -> str | None:
    if backend == "local":
        return None  # (write_config's: one store file in `tmp`, shared by both)
    assert redis is not None
    return (f"state:\n  backend: redis\n  url: {redis.url}\n  prefix: kgbuilds\n"
            f"  snapshot_path: {tmp}/snap-{free_port()}.json\n"
            "  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
            "  poll_interval: 100ms\n  heartbeat_interval: 200ms\n  instance_lease: 5s\n")


async def _fleet(session: ClientSession, admin: str) -> dict:
    async with session.get(admin + "/v1/fleet",
                           headers={"Authorization": "Bearer " + READ["KILLGATE_TOKEN"]}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _two_builds(tmp_path: Path, backend: str, redis: RedisServer | None, backends,
                      gateway_procs, session: ClientSession,
                      weights: tuple[float, float] = (90, 10)) -> tuple[list, list[str]]:
    """Two serve processes of two builds on one store, ready, each one's build said by
    both (their /v1/fleet); and their builds."""
    stable, canary = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(stable, canary, *weights)
    trees = [_tree(tmp_path, "old"), _tree(tmp_path, "new", "# a later commit\n")]
    builds = [re.search(r"\(build ([0-9a-f]{12})\)", _version(env)) for env in trees]
    assert all(builds), builds
    want = [m.group(1) for m in builds if m is not None]
    assert want[0] != want[1], want
    gws = []
    for n, env in enumerate(trees):
        cfg = write_config(tmp_path, routes, state=_state(tmp_path, backend, redis),
                           name=f"{n}.yaml", listen=f"127.0.0.1:{free_port()}",
                           admin=f"127.0.0.1:{free_port()}")
        gws.append(gateway_procs(cfg, env=env))
    for g in gws:
        await asyncio.to_thread(g.wait_ready)

    async def both_said() -> bool:
        views = [(await _fleet(session, g.admin))["instances"] for g in gws]
        return all(len([r for r in v if r["live"] and r.get("build")]) == 2 for v in views)
    await wait_until(both_said, 15, 0.1, "both instances' builds in each /v1/fleet")
    return gws, want


@pytest.mark.parametrize("backend", ["redis", "local"])
async def test_fleet_and_status_say_which_instance_runs_which_build(
        tmp_path: Path, backend: str, backends, gateway_procs, session: ClientSession,
        request: pytest.FixtureRequest) -> None:
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    gws, want = await _two_builds(tmp_path, backend, redis, backends, gateway_procs, session)
    for g, mine in zip(gws, want, strict=True):
        rows = (await _fleet(session, g.admin))["instances"]
        # (each row's build is the one its process runs: this instance's own is `mine`)
        assert sorted(r["build"] for r in rows) == sorted(want), rows
        assert [r["build"] for r in rows if r["self"]] == [mine], rows

    res = await acli("status", "--json", "--admin", gws[0].admin, env=READ)
    assert res.returncode == 0, res.stderr
    insts = json.loads(res.stdout)["instances"]
    assert sorted(i.get("build") for i in insts.values()) == sorted(want), insts
    res = await acli("status", "--admin", gws[0].admin, env=READ)
    assert res.returncode == 0, res.stderr
    text = res.stdout.split("\nINSTANCES\n", 1)[1].split("\nROUTES", 1)[0]
    header, *lines = text.strip().splitlines()
    assert header.split()[:3] == ["instance", "build", "generation"], text
    assert sorted(ln.split()[1] for ln in lines[:2]) == sorted(want), text
    line = f"2 builds: {min(want)} on 1, {max(want)} on 1: an upgrade under way, or a host " \
           "left behind"
    assert lines[2:] == [line], text


async def test_the_console_says_which_instance_runs_which_build(
        tmp_path: Path, backends, gateway_procs, session: ClientSession,
        redis_server: RedisServer, browser: Browser) -> None:
    """The console's fleet list, in a real browser: a Build column, and the note that the
    live instances run two builds."""
    gws, want = await _two_builds(tmp_path, "redis", redis_server, backends, gateway_procs,
                                  session)

    def shown() -> tuple[list[str], str]:
        b = browser
        b.sign_in(gws[0].admin, token("killgate:read"), "alice")
        cells = "[data-testid=fleet-build]"
        b.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, cells)) == 2, "two rows")
        b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=fleet-builds]"),
               "the builds note", seen="#fleet-body")
        return ([e.text for e in b.d.find_elements(By.CSS_SELECTOR, cells)],
                b.text("[data-testid=fleet-builds]"))
    cells, note = await asyncio.to_thread(shown)
    assert sorted(cells) == sorted(want), cells
    said = " ".join(note.split())
    assert said == f"2 builds {min(want)} on 1, {max(want)} on 1: an upgrade under way, or a " \
                   "host left behind", note


async def test_a_drills_instances_say_their_builds(
        tmp_path: Path, backends, gateway_procs, session: ClientSession,
        redis_server: RedisServer) -> None:
    """A drill's report, mid-upgrade: each instance row (`--json`) and the human table's
    BUILD column name the build of the instance measured."""
    # (50/50 and 40 a second: every instance's steady window reaches v2 also on a
    # loaded host; at 90/10 and 20 one of 4 runs under -n 2 aborted as not steady)
    gws, want = await _two_builds(tmp_path, "redis", redis_server, backends, gateway_procs,
                                  session, (50, 50))
    where = ("--admin", gws[0].admin, "--production", "--rate", "40", "--hold", "1s",
             "--out", str(tmp_path / "out"))
    env = {"KILLGATE_TOKEN": token("killgate:admin")}
    res = await acli("drill", "kill", "--route", "iris", "--version", "v2", "--json", *where,
                     env=env)
    report = json.loads(res.stdout)
    assert report["verdict"] == "passed", (report["reasons"], res.stderr)
    built = {r["instance"]: r.get("build") for r in report["instances"]}
    assert built == {g.url: b for g, b in zip(gws, want, strict=True)}, built
    text = (tmp_path / "out").glob("**/*.md")
    md = "".join(f.read_text() for f in text)
    assert "| instance | build | requests |" in md, md
    for g, b in zip(gws, want, strict=True):
        assert f"| {g.url} | {b} | " in md, md
