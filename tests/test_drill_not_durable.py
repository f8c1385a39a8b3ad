"""A drill endpoint's write answered 503 `not_durable` (committed and in force, not yet on
`state.min_replicas` replicas: after a Sentinel failover, until a replica rejoins the
promoted node) keeps its answer under its Idempotency-Key, as every other write does: the
retry the answer asks for is 503 not_durable again while no replica holds it, and once
one does it is the write's own answer, replayed. Found by review (revnewuser10, a drill
run through a failover): the key was let go, and the retry ran the step again: the
`killgate drill` CLI's retry of its end answered 404 unknown_drill ("no open drill") for
an end it had recorded, and it said `could not record the drill's end`; a retried open
answered 409, leaving the drill its first try opened to nobody. On real redis-servers (a
primary, and a replica detached and attached again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.drillrig import DRILL, routes
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_replicas import attach_replica

pytestmark = pytest.mark.timeout(60)


async def _post(session, admin: str, path: str, body: dict, key: str) -> tuple[int, dict, bool]:
    return await keyed_post(session, admin, "dana", path, body, key, scope=DRILL)


async def _confirmed(session, admin: str, path: str, body: dict,
                     key: str) -> tuple[int, dict, bool]:
    """The retry a client makes after each 503, until one is not."""
    answers: list[tuple[int, dict, bool]] = []

    async def retried() -> bool:
        answers.append(await _post(session, admin, path, body, key))
        return answers[-1][0] != 503

    await wait_until(retried, 10, 0.2, f"the retry of {path}, confirmed")
    return answers[-1]


async def test_a_drills_end_and_open_answered_not_durable_are_answered_by_their_retry(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    await attach_replica(redis_server, second_redis)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state_via(fwd, tmp_path, "kg-drnd", min_replicas="1",
                            replica_timeout="200ms")
    async with running_gateway(write_config(tmp_path, routes(p1, p2), state=state)) as g:
        a = g.admin
        opened = {"kind": "kill", "route": "iris-drill", "version": "v2", "reason": "r"}
        status, body, _ = await _post(session, a, "/v1/drills", opened, "open-1")
        assert status == 200, body
        drill = body["drill"]
        status, body, _ = await _post(session, a, f"/v1/drills/{drill}/inject",
                                      {"reason": "r"}, "inject-1")
        assert status == 200, body
        second_redis.cmd("REPLICAOF", "NO", "ONE")  # (the promoted node: no replica yet)
        status, body, _ = await _post(session, a, f"/v1/drills/{drill}/restore",
                                      {"reason": "r"}, "restore-1")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        end = {"verdict": "failed", "reason": "r", "summary": {"leaks": 0, "errors": 0}}
        path = f"/v1/drills/{drill}/end"
        status, body, _ = await _post(session, a, path, end, "end-1")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        assert drill not in g.gw.holder.doc.drills  # (ended: in force)
        # no replica yet: its retry says so again, never "no open drill"
        status, body, _ = await _post(session, a, path, end, "end-1")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        # an open answered not_durable: its retry is that open's answer, not a 409
        status, body, _ = await _post(session, a, "/v1/drills", opened, "open-2")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        [second] = g.gw.holder.doc.drills
        status, body, _ = await _post(session, a, "/v1/drills", opened, "open-2")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        await attach_replica(redis_server, second_redis)
        status, body, replayed = await _confirmed(session, a, path, end, "end-1")
        assert (status, replayed) == (200, True), body
        assert body["drill"] == drill
        status, body, replayed = await _confirmed(session, a, "/v1/drills", opened, "open-2")
        assert (status, replayed, body["drill"]) == (200, True, second), body
        events = await g.gw.sync.store.audit_events()
        ends = [e for e in events if e["action"] == "drill.end" and e.get("drill") == drill]
        assert len(ends) == 1, ends
        assert [e["drill"] for e in events if e["action"] == "drill.start"].count(second) == 1
