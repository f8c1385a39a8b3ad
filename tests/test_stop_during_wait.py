"""An admin write cut by its instance's stop while it waits for its replicas (committed and
in force: the stop's 2 s for admin answers ran out) keeps its answer under its
Idempotency-Key, as one answered 503 not_durable does: the client's retry (at another
instance, the first gone) is answered with the write's result once a replica holds it.
Before (found by review revresp2): the cancelled write let its key go, and the retry ran the
change again: an unkill that had lifted the kill was answered 409 not_killed. Real
redis-servers (a primary, and its replica SIGSTOPped while the write waits), two in-process
gateways."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_replicas import _info

pytestmark = pytest.mark.timeout(90)


def _waiting(redis: RedisServer) -> bool:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "CLIENT", "LIST"],
                         capture_output=True, text=True, timeout=5).stdout
    return "cmd=wait" in out


async def test_an_unkill_cut_by_the_stop_while_it_waits_is_answered_by_its_retry(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        second_redis: RedisServer) -> None:
    primary, replica = redis_server, second_redis
    replica.cmd("REPLICAOF", "127.0.0.1", str(primary.port))
    await wait_until(lambda: "state=online" in _info(primary, "slave0")
                     and _info(replica, "master_link_status") == "up", 10,
                     what="the replica to attach")
    p = await backends(echo_app("v1"))
    cfgs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        state = (f"state:\n  backend: redis\n  url: {primary.url}\n  prefix: kg-stopwait\n"
                 f"  snapshot_path: {tmp_path / name}/snap.json\n"
                 "  signing_key_env: KILLGATE_TEST_STATE_KEY\n  poll_interval: 100ms\n"
                 "  min_replicas: 1\n  replica_timeout: 20s\n")
        cfgs.append(write_config(tmp_path / name, two_versions(p, p), state=state))
    async with running_gateway(cfgs[1], "b") as b:
        async with running_gateway(cfgs[0], "a") as a:
            status, body, _ = await keyed_post(session, a.admin, "alice", "/v1/kill",
                                               {"scope": "global", "reason": "INC-9"})
            assert status == 200, body
            replica.freeze()
            try:
                cut = asyncio.ensure_future(keyed_post(
                    session, a.admin, "alice", "/v1/unkill",
                    {"scope": "global", "reason": "INC-9 over"}, "u-1"))
                # (committed, in force, waiting for the replica)
                await wait_until(lambda: "global" not in a.gw.holder.doc.kills
                                 and _waiting(primary), 10, 0.02, what="the unkill's WAIT")
            except BaseException:
                replica.thaw()
                raise
            # (the stop, as `async with` ends: the admin answer in flight is cut at 2 s)
        with pytest.raises(aiohttp.ClientError):  # (cut: no answer)
            await cut
        replica.thaw()
        answers = []

        async def retried() -> bool:  # (the client's retry, same key, at b)
            answers.append(await keyed_post(session, b.admin, "alice", "/v1/unkill",
                                            {"scope": "global", "reason": "INC-9 over"},
                                            "u-1"))
            return answers[-1][0] != 503

        await wait_until(retried, 20, 0.2, "the retry, confirmed")
        status, body, replayed = answers[-1]
        assert (status, replayed) == (200, True), answers  # (before: 409 not_killed)
        assert "global" not in b.gw.holder.doc.kills
