"""A worker whose file in the group's run directory could not be written is not named
behind on its siblings' word (review revmerge38 of impdrill8's group answer).

A `serve --workers N` worker keeps the generation it runs in the group's run directory
(gateway/workerstates.py) and its siblings tell a drill of it. A write of that file that
fails (a full disk) is swallowed: the file keeps the generation before, for good, and
every sibling's proved word said "behind"; the drill named the worker `late`, one that had
applied the restore, and failed. A sibling's "behind" past the catch-up time is now only a
reason to ask the worker itself (named late on its own answer, or its silence). Real
`killgate serve --workers 3` on a real redis-server; the failure made real by a directory
where the worker writes its file's temporary copy.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.control.drillbehind import behind
from gateway.control.drillfleet import published
from gateway.control.drillload import AdminClient
from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, free_port, wait_until, write_config
from tests.drillrig import routes
from tests.test_drill_group_answer import DRILL, _keys
from tests.test_drill_unproven import _operator
from tests.test_revops_fleet import _state
from tests.test_workers import _children

pytestmark = pytest.mark.timeout(90)  # (3 workers start in ~10 s on a loaded 2-core host)


async def test_a_worker_whose_file_write_failed_is_asked_not_named_late(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    run = tmp_path / "run"
    run.mkdir()
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    g = gateway_procs(write_config(tmp_path, routes(p1, p2),
                                   state=_state(redis_server, tmp_path, instance_lease="20s"),
                                   listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"), workers=3,
                      env={"TMPDIR": str(run)})
    await asyncio.to_thread(g.wait_ready)
    read = AdminClient(session, g.admin, admin_token("killgate:read"))

    async def at_one(gen: int | None = None) -> dict | None:
        found = dict((await read.call("GET", "/v1/status")).get("instances") or {})
        gens = {i.get("generation") for i in found.values()}
        ok = len(found) == 3 and all(i.get("admin") for i in found.values()) \
            and len(gens) == 1 and (gen is None or gens == {gen})
        return found if ok else None

    before = await wait_until(at_one, 30, 0.1, "the group's 3 workers in the fleet")
    old = next(iter(before.values()))["generation"]
    victim = _children(g.proc.pid)[0]
    (rundir,) = run.glob("killgate-workers-*")
    files = {json.loads(f.read_text())["pid"]: f for f in rundir.glob("state-*.json")}
    slot = files[victim].name[len("state-"):-len(".json")]
    (rundir / f".state-{slot}.{victim}.tmp").mkdir()  # (its next write fails)

    status, body, _ = await keyed_post(session, g.admin, "alice", "/v1/kill",
                                       {"scope": "global", "reason": "stale file"})
    assert status == 200, body
    now = await wait_until(lambda: at_one(old + 1), 30, 0.1, "the kill on every worker")
    assert json.loads(files[victim].read_text())["generation"] == old  # (its write failed)

    api = AdminClient(session, await _operator(backends), "t")
    for _ in range(5):  # (an ask that reaches the victim itself hears it as applied)
        found = await behind(api, sorted(now), published(now), old + 1, DRILL, _keys())
        assert found.late == [] and found.unasked == [] and found.unverified == [], found
        assert sorted(found.applied) == sorted(now), found
