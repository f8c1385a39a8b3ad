"""`store.last_error` once the sync loop healed what it said (found by review): it was reset
only at a reconnect (startup._connect_and_sync), so after a repair inside the loop (a forged
document re-seeded over) /v1/status kept "refused the stored state" for good and the store
read as broken after it healed. A full sync that holds the store's verified document now
clears it; a refusal still true (the forger at work, repairs backing off, the instance
stale) is still said: tests/test_forgery_staleness.py. Real redis-server, an in-process
gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_forgery import stored_doc
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(30)


def _forge(redis: RedisServer, forged: str, gen: int) -> None:
    """The document without its kills, unsigned, and a generation key that makes every
    instance read it at its next poll."""
    redis.cmd("SET", "kgtest:state", forged)
    redis.cmd("SET", "kgtest:gen", str(gen))


def _ours_again(redis: RedisServer) -> bool:
    return redis.cmd("GET", "kgtest:state").startswith("KGS1 ") and \
        "version:iris:v2" in stored_doc(redis)["kills"]


async def test_a_repaired_forgery_leaves_no_store_error(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        sync = g.gw.sync
        await wait_until(lambda: sync.status()["last_error"] is None, 2, what="a clean start")
        genuine = stored_doc(redis_server)
        refused = sync.tamper.counts.get("state", 0)
        _forge(redis_server, json.dumps({**genuine, "kills": {}}), 10_000)
        # refused (counted), then re-seeded: the store holds our kill again, signed
        await wait_until(lambda: sync.tamper.counts.get("state", 0) > refused, 3,
                         what="the forged document to be refused")
        await wait_until(lambda: _ours_again(redis_server), 3, what="the re-seed")
        await wait_until(lambda: sync.status()["last_error"] is None, 2,
                         what="the healed store to say no error (it kept the refusal)")
        st = sync.status()
        assert st["connected"] and not st["stale"], st
        # (the refusal is not forgotten: counted in store.verification, audited)
        assert sync.tamper.counts.get("state", 0) > refused

