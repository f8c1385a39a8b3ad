"""A drill whose restore is committed but on no redis replica (503 not_durable for all of its
retries: the primary lost its replica, as a Sentinel-promoted one has until the old master
rejoins it) says what happened: the restore is in force, not durable; what to do (bring a
replica back), and that there is nothing to run again. Found by review (revnewuser10: a kill
drill through a real Sentinel failover): it said `RESTORE FAILED ... run: killgate drill
restore ID` (which then answered "ended already; nothing to restore"), failed the drill
with "the fleet is not as it was before the drill" and "Fleet restored ...: NO" while
every instance had applied the restore, and `could not record the drill's end` for an end
it had recorded.

Real processes: a redis-server primary and a replica (detached mid-drill), a `killgate
serve` with `min_replicas: 1`, two backends, and the `killgate drill` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, free_port, wait_until, write_config
from tests.drillfleet import token
from tests.drillrig import answer, routes
from tests.redisha import redis_state_yaml, state_key_env
from tests.test_cli import acli
from tests.test_replicas import attach_replica

pytestmark = pytest.mark.timeout(150)


async def test_a_restore_on_no_replica_is_said_in_force_not_durable(
        tmp_path: Path, backends, gateway_procs, session, redis_server: RedisServer,
        second_redis: RedisServer) -> None:
    await attach_replica(redis_server, second_redis)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state_yaml(redis_server.url, f"{tmp_path}/snap.json", "kgrnd",
                             min_replicas="1", replica_timeout="200ms")
    cfg = write_config(tmp_path, routes(p1, p2), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    g = gateway_procs(cfg, env=state_key_env())
    await asyncio.to_thread(g.wait_ready)
    env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token()}
    drill = asyncio.ensure_future(acli(
        "drill", "kill", "--route", "iris-drill", "--version", "v2", "--rate", "20",
        "--steady", "500ms", "--hold", "2s", "--settle", "500ms", "--json", "--out",
        str(tmp_path / "reports"), env=env))

    async def injected() -> bool:
        async with session.get(g.admin + "/v1/drills", headers=bearer(
                "killgate:read", "t", 600)) as r:
            return any(d["injected"] for d in (await r.json())["open"])

    await wait_until(injected, 20, 0.05, "the drill's kill")
    second_redis.cmd("REPLICAOF", "NO", "ONE")  # (the primary's only replica, gone)
    res = await drill
    report = json.loads(res.stdout)
    # every instance runs the restore: v2 answers on the drill route again
    url = g.url + "/drill/iris/infer"
    assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v2", "pinned")
    assert "RESTORE NOT DURABLE: the restore is in force on the fleet" in res.stderr, res.stderr
    assert "bring a replica back" in res.stderr and "nothing to run again" in res.stderr
    after_open = res.stderr.split("\n", 1)[1]  # (the first line names it, if the drill dies)
    assert "RESTORE FAILED" not in after_open and "drill restore" not in after_open, res.stderr
    assert "could not record the drill's end" not in res.stderr, res.stderr
    assert "the drill's end is recorded, but no redis replica has confirmed it" in res.stderr
    assert (res.returncode, report["verdict"]) == (1, "failed"), res
    assert report["restore_not_durable"] is True
    assert "the fleet is not as it was before the drill" not in report["reasons"], report
    assert any("the restore is in force but not durable" in r for r in report["reasons"])
    md = (tmp_path / "reports" / f"{report['id']}.md").read_text()
    assert "(kills, weights, latches): **in force, NOT DURABLE" in md, md


async def test_an_open_on_no_replica_is_closed_at_once_not_left_open(
        tmp_path: Path, backends, gateway_procs, session, redis_server: RedisServer) -> None:
    """The open itself answered not_durable for its 10 s of retries (right after a
    failover, before the old master rejoins): the CLI said "503 not_durable: generation N
    is in force" and exited 1, naming no drill, and left it open: every later drill of the
    route was refused 409 drill_in_progress until the fleet closed it, past its deadline.
    Now it closes the drill it opened (restore, end `aborted`) and says why: exit 2."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state_yaml(redis_server.url, f"{tmp_path}/snap.json", "kgrnd2",
                             min_replicas="1", replica_timeout="200ms")
    cfg = write_config(tmp_path, routes(p1, p2), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    g = gateway_procs(cfg, env=state_key_env())  # (its primary has no replica at all)
    await asyncio.to_thread(g.wait_ready)
    env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token()}
    res = await acli("drill", "kill", "--route", "iris-drill", "--version", "v2", "--rate",
                     "20", "--steady", "500ms", "--hold", "1s", "--json", "--out",
                     str(tmp_path / "reports"), env=env)
    report = json.loads(res.stdout) if res.stdout.strip() else {}
    assert (res.returncode, report.get("verdict")) == (2, "aborted"), res
    [why] = report["reasons"]
    assert "no redis replica" in why and "bring a replica back" in why, why
    assert "was closed at once" in why, why
    async with session.get(g.admin + "/v1/drills", headers=bearer("killgate:read", "t")) as r:
        listed = await r.json()
    assert listed["open"] == [], listed
    assert [d["after"]["verdict"] for d in listed["history"]] == ["aborted"], listed
