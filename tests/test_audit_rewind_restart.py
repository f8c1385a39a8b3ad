"""Someone who can write to redis (without the signing key) cuts events that changed no
state (an idempotent retry's record, a config reload's, a refused call's) out of the trail
while the instances restart: the genuine document of the same generation from before
them put back, with its generation and head keys, and the events deleted. Running
instances noticed (documents of one generation are ordered by `audit_seq`:
test_attacks_state.py); a restarted one knew only the generation its snapshot held, took
the older head for the newest, and the next event continued it: the trail verified, the
events gone without a trace. The snapshot now keeps the newest head this instance saw;
the store's document, behind it, is re-seeded (as a backup restored is:
tests/test_audit_restore_behind.py), the re-seed naming that head: `audit verify` names
the loss.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_attacks_state import post, stream_ids
from tests.test_keyed_audit import KEY, H, events_in, verify
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)


async def test_events_cut_while_the_instance_restarts_break_the_chain(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    snap = tmp_path / "snapshot-a.json"
    async with running_gateway(cfg) as g:
        hdrs = {**H, "Idempotency-Key": "k1"}
        body = {"scope": "route", "route": "iris", "reason": "r"}
        async with session.post(g.admin + "/v1/kill", headers=hdrs, json=body) as r:
            assert r.status == 200
        await wait_until(lambda: snap.exists() and b"route:iris" in snap.read_bytes(), 5,
                         what="the kill's snapshot")
        saved = {k: redis_server.cmd("GET", k) for k in ("kgtest:state", "kgtest:gen")}
        kill_ev = events_in(redis_server)[-1]
        async with session.post(g.admin + "/v1/kill", headers=hdrs, json=body) as r:
            assert r.status == 200 and r.headers.get("idempotent-replayed") == "true"
        await wait_until(lambda: events_in(redis_server)[-1]["action"] == "replay", 5,
                         what="the replay record")
        replay = events_in(redis_server)[-1]["hash"]
        await wait_until(lambda: replay.encode() in snap.read_bytes(), 5,
                         what="the snapshot to name the replay record's head")
        replay_id = stream_ids(redis_server)[-1]
    for k, v in saved.items():
        redis_server.cmd("SET", k, v)
    redis_server.cmd("SET", "kgtest:audit:head", kill_ev["hash"])
    redis_server.cmd("XDEL", "kgtest:audit", replay_id)
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="global")
        reseed = events_in(redis_server)[-2]
        assert reseed["action"] == "state.reseed" and reseed["anchored_head"] == replay
        assert reseed["prev_hash"] == kill_ev["hash"]
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1, res.stdout  # (before: "audit chain ok")
        assert "BROKEN" in res.stderr and replay[:16] in res.stderr, res.stderr
