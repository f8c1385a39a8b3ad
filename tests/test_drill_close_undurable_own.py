"""A drill CLI whose open answered 503 not_durable for its retries closes the drill IT
opened, never another: the answer names it. Found by review (revdrill10): the CLI listed
`/v1/drills` and restored and ended "the route's one open drill", whoever's it was. Its own
drill ended meanwhile (by another operator: `killgate drill restore` on a drill that
looked stuck) and another operator's drill opened on the route since, it restored and
ended that one, `aborted`, under that operator's running drill, and said its own
"was closed at once".

Real processes: a redis-server without a replica (so every write is not_durable under
`min_replicas: 1`), a `killgate serve`, two backends, the `killgate drill` CLI; the other
operator ("bob") writes with his own token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, free_port, wait_until, write_config
from tests.drillfleet import token
from tests.drillrig import DRILL, routes
from tests.redisha import redis_state_yaml, state_key_env
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(90)


async def test_an_undurable_open_closes_its_own_drill_not_anothers(
        tmp_path: Path, backends, gateway_procs, session, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state_yaml(redis_server.url, f"{tmp_path}/snap.json", "kgown",
                             min_replicas="1", replica_timeout="200ms")
    cfg = write_config(tmp_path, routes(p1, p2), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    g = gateway_procs(cfg, env=state_key_env())  # (its primary has no replica at all)
    await asyncio.to_thread(g.wait_ready)
    env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token(sub="dana")}
    cli = asyncio.ensure_future(acli(
        "drill", "kill", "--route", "iris-drill", "--version", "v2", "--rate", "20",
        "--steady", "500ms", "--hold", "1s", "--json", "--out", str(tmp_path / "reports"),
        env=env))

    async def open_drills() -> list[dict]:
        async with session.get(g.admin + "/v1/drills",
                               headers=bearer("killgate:read", "t")) as r:
            return list((await r.json())["open"])

    async def danas() -> str | None:
        return next((d["id"] for d in await open_drills() if d["actor"] == "dana"), None)

    await wait_until(danas, 20, 0.05, "dana's drill, opened (answered not_durable)")
    mine = await danas()
    # while dana's CLI retries its open: bob ends her drill, and opens his own on the route
    status, body, _ = await keyed_post(session, g.admin, "bob", f"/v1/drills/{mine}/end", {
        "verdict": "aborted", "summary": {}, "reason": "looked stuck"}, "bob-end", DRILL)
    assert (status, body["error"]["type"]) == (503, "not_durable"), body  # (committed)
    status, body, _ = await keyed_post(session, g.admin, "bob", "/v1/drills", {
        "kind": "kill", "route": "iris-drill", "version": "v2", "reason": "bob's drill"},
        "bob-open", DRILL)
    assert (status, body["error"]["type"]) == (503, "not_durable"), body  # (committed)
    [bobs] = [d["id"] for d in await open_drills() if d["actor"] == "bob"]
    assert body["error"].get("drill") == bobs, body  # (the 503 names the drill it opened)
    assert not cli.done(), "dana's CLI stopped retrying before bob's drill opened"
    res = await cli
    report = json.loads(res.stdout) if res.stdout.strip() else {}
    assert (res.returncode, report.get("verdict")) == (2, "aborted"), res
    # bob's drill is open still, never restored or ended by dana's CLI
    assert [d["id"] for d in await open_drills()] == [bobs], res.stderr
    [why] = report["reasons"]
    assert bobs not in why and f"drill {mine} opened, and was ended meanwhile" in why, why
