"""A write answered 503 `not_durable` (committed and in force, not yet on
`state.min_replicas` replicas) keeps its answer under its Idempotency-Key: the retry the
answer asks for ("retry the same call, it is idempotent") is 503 not_durable again while no
replica holds it, and once one does it is answered with the write's own result (replayed).
Found by review (revmerge21): the key was let go, and the retry ran the step again: a
final approve's retry answered 404 unknown_approval ("no open approval") for a change it
had applied, as impadmin3 fixed for `outcome_unknown` only. On real redis-servers (a
primary, and a replica attached for the confirmation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_replicas import _info

pytestmark = pytest.mark.timeout(60)


_call = keyed_post


async def test_a_final_approve_answered_not_durable_is_answered_by_its_retry(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kg-ndap", min_replicas="1",
                            replica_timeout="200ms")
    cfg = write_config(tmp_path, two_versions(p, p), state=state,
                       extra="approvals: {unkill_global: 2, ttl: 1m}\n")
    async with running_gateway(cfg) as g:
        status, body, _ = await _call(session, g.admin, "alice", "/v1/kill",
                                      {"scope": "global", "reason": "INC-3"})
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        status, body, _ = await _call(session, g.admin, "alice", "/v1/unkill",
                                      {"scope": "global", "reason": "INC-3 over"})
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        [ident] = g.gw.holder.doc.approvals
        path = f"/v1/approvals/{ident}/approve"
        status, body, _ = await _call(session, g.admin, "bob", path, {"reason": "ok"}, "ap-1")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        assert "global" not in g.gw.holder.doc.kills  # (applied: in force)
        # no replica yet: the retry says so again, never "no open approval"
        status, body, _ = await _call(session, g.admin, "bob", path, {"reason": "ok"}, "ap-1")
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        second_redis.cmd("REPLICAOF", "127.0.0.1", str(redis_server.port))
        await wait_until(lambda: "state=online" in _info(redis_server, "slave0")
                         and _info(second_redis, "master_link_status") == "up", 10,
                         what="the replica to attach")
        answers = []

        async def retried() -> bool:  # (as a client retries after each 503)
            answers.append(await _call(session, g.admin, "bob", path, {"reason": "ok"},
                                       "ap-1"))
            return answers[-1][0] != 503

        await wait_until(retried, 10, 0.2, "the retry, confirmed")
        status, body, replayed = answers[-1]
        assert (status, replayed) == (200, True), answers
        assert body["approval"]["state"] == "applied", body
        unkills = [e for e in await g.gw.sync.store.audit_events() if e["action"] == "unkill"]
        assert [e["id"] for e in unkills] == [body["audit_id"]]
        assert "global" not in g.gw.holder.doc.kills
