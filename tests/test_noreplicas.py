"""A primary whose own `min-replicas-to-write` refuses every write (-NOREPLICAS) once its
replica leaves is not a lost store: its reads work. Found by revdurable with real
processes: every heartbeat refused within 0.5 s, the sync loop took the store for lost (a
`state_store_lost` warning and a full reconnect every 0.5 s, `killgate status`
UNREACHABLE, the replica count unknown so NOT DURABLE never said), and a kill answered 503
`audit_unavailable` naming neither the cause nor the lever (the emergency local kill).
Now: the instance stays connected and synced, says it once (`state_store_writes_refused`,
/v1/status `store.writes_refused`, `killgate status` WRITES REFUSED, the gauge
`killgate_state_writes_refused`), keeps counting the replicas (0 of 1: NOT DURABLE), and a
kill, unkill or rollback answers 503 `store_refuses_writes` naming min-replicas-to-write
and the local kill, changing nothing. Real primary and replica, an in-process gateway, the
real CLI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.cli.statusstore import store_reach
from gateway.state.redisbusy import refuses_writes
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_cli import acli
from tests.test_forgery import stored_doc
from tests.test_killswitch import auth, status_of
from tests.test_replicas import _info, attach_replica
from tests.test_replicas_status import _section

pytestmark = pytest.mark.timeout(120)


def _said(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def _stored(redis: RedisServer, prefix: str) -> tuple[str, str]:
    """The store's generation and audit trail's length, as redis holds them."""
    return str(redis.cmd("GET", f"{prefix}:gen")), str(redis.cmd("XLEN", f"{prefix}:audit"))


async def _post(session: ClientSession, admin: str, path: str, body: dict[str, Any]
                ) -> tuple[int, dict[str, Any]]:
    hdr = auth("killgate:kill killgate:rollout killgate:read")
    async with session.post(admin + path, json=body, headers=hdr) as r:
        return r.status, await r.json()


async def test_a_primary_refusing_writes_is_said_and_stays_synced(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        second_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    primary.cmd("CONFIG", "SET", "min-replicas-to-write", "1")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=_section(primary.url, "kgnorep", tmp_path))
    caplog.set_level(logging.INFO, "killgate.state")
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        env = {"KILLGATE_ADMIN_URL": g.admin,
               "KILLGATE_TOKEN": admin_token("killgate:read")}
        await wait_until(lambda: sync.status()["replicas"] == {"connected": 1,
                                                               "required": 1},
                         10, what="the replica counted")
        # a kill made while the store takes writes (the unkill below is refused)
        st, body = await _post(session, g.admin, "/v1/kill",
                               {"scope": "version", "route": "iris", "version": "v2",
                                "reason": "before"})
        assert st == 200, body

        replica.cmd("REPLICAOF", "NO", "ONE")  # (the replica leaves: NOREPLICAS)
        await wait_until(lambda: _info(primary, "connected_slaves") == "0", 10,
                         what="the replica to detach")
        await wait_until(lambda: sync.status()["writes_refused"] is not None, 10,
                         what="the refused writes said")
        # heartbeats (200 ms) and polls (100 ms) for 1.5 s: connected throughout
        beats, until = sync.peers.last_beat, time.monotonic() + 1.5
        while time.monotonic() < until:
            assert sync.connected, sync.status()
            await asyncio.sleep(0.02)  # (a watch over the window, not a sync)
        assert sync.peers.last_beat > beats  # (a refused beat was tried again)
        st = sync.status()
        assert st["connected"] is True and st["stale"] is False, st
        assert "min-replicas-to-write" in st["writes_refused"], st
        assert "NOREPLICAS" in st["writes_refused"], st
        assert st["replicas"] == {"connected": 0, "required": 1}, st  # (INFO works)
        assert not _said(caplog, "state_store_lost")
        assert len(_said(caplog, "state_store_writes_refused")) == 1
        assert len(_said(caplog, "state_store_not_durable")) == 1
        await wait_until(lambda: g.gw.metrics.get("killgate_state_writes_refused") == 1,
                         5, what="the gauge")
        assert g.gw.metrics.get("killgate_state_store_connected") == 1
        res = await acli("status", env=env)
        assert res.returncode == 0, res.stderr
        first = res.stdout.splitlines()[0]
        assert "store redis reachable, WRITES REFUSED: redis's min-replicas-to-write " \
               "refuses every write" in first, res.stdout
        assert "killgate kill --local" in first and "NOT DURABLE" in first, res.stdout
        assert "UNREACHABLE" not in res.stdout, res.stdout

        # every write: 503 store_refuses_writes, nothing changed
        before = _stored(primary, "kgnorep")
        gen = sync.holder.doc.generation
        for path, req in (
                ("/v1/kill", {"scope": "route", "route": "iris", "reason": "r"}),
                ("/v1/unkill", {"scope": "version", "route": "iris", "version": "v2",
                                "reason": "r"}),
                ("/v1/routes/iris/rollback", {"to": "v1", "reason": "r"})):
            st, body = await _post(session, g.admin, path, req)
            err = body["error"]
            assert (st, err["type"]) == (503, "store_refuses_writes"), (path, body)
            assert "min-replicas-to-write" in err["message"], body
            assert "killgate kill --local" in err["message"], body
            assert "nothing was changed" in err["message"], body
        assert _stored(primary, "kgnorep") == before
        assert sync.holder.doc.generation == gen
        assert (await status_of(session, g.url))[0] == 200  # (iris not killed)

        # the lever it names: the same kill with ?local=1 is taken on this instance
        st, body = await _post(session, g.admin, "/v1/kill?local=1",
                               {"scope": "route", "route": "iris", "reason": "local"})
        assert st == 202 and body.get("local") is True, body
        assert (await status_of(session, g.url))[0] == 503
        assert _stored(primary, "kgnorep") == before

        # a replica back: writes taken, said once, the local kill merged
        await attach_replica(primary, replica)
        await wait_until(lambda: sync.status()["writes_refused"] is None, 10,
                         what="the writes taken again")
        await wait_until(lambda: "route:iris" in stored_doc(primary, "kgnorep")["kills"], 10,
                         what="the local kill merged into the store")
        assert len(_said(caplog, "state_store_writes_taken")) == 1
        assert len(_said(caplog, "state_store_writes_refused")) == 1
        assert not _said(caplog, "state_store_lost")
        await wait_until(lambda: g.gw.metrics.get("killgate_state_writes_refused") == 0,
                         5, what="the gauge back to 0")


def test_only_noreplicas_is_a_refusal_of_writes() -> None:
    """redis 7 keeps the code first, a script's too; redis 6 wraps a script's after "-"."""
    assert refuses_writes("NOREPLICAS Not enough good replicas to write.", "h:1") is not None
    assert refuses_writes("NOREPLICAS Not enough good replicas to write. script: ab, on "
                          "@user_script:1.", "h:1") is not None
    assert refuses_writes("ERR Error running script (call to f_ab): @user_script:1: "
                          "-NOREPLICAS Not enough good replicas to write.", "h:1") is not None
    assert refuses_writes("READONLY You can't write against a read only replica.",
                          "h:1") is None
    base = {"backend": "redis", "connected": True}
    assert store_reach({**base, "writes_refused": None}) == "reachable"
    assert store_reach({**base, "connected": False, "writes_refused": "x"}) == "UNREACHABLE"
