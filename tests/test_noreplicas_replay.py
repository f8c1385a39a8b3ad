"""A store put back to an older document (a replay by someone who can write to redis, or a
primary restarted from an older RDB) while redis refuses every write (-NOREPLICAS): no
instance can repair it, and a process that starts then (a new pod, a lost snapshot) holds
nothing newer to tell it by. Found by revlate47 with real processes: such an instance
applied the older document, served a route killed since, and said it was synced
(connected, not stale, no error) for as long as the refusal lasted. The trail the document
anchors says it: its newest event is past the document's head (every commit writes both in
one script). Now the first sync, and every one after while it lasts, compares them: not a
sync (the staleness clock is not started, `last_error` says why), until an instance holding
the newer state repairs the store. Real redis, two in-process gateways.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_state
from tests.test_killswitch import auth, status_of

pytestmark = pytest.mark.timeout(90)


async def test_a_replayed_document_is_no_sync_for_an_instance_starting_meanwhile(
        tmp_path: Path, backends: Any, session: ClientSession,
        redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    for n in ("a", "c"):
        (tmp_path / n).mkdir()
    cfg_a = write_config(tmp_path / "a", routes, state=redis_state(redis_server, tmp_path, "a"))
    cfg_c = write_config(tmp_path / "c", routes, state=redis_state(redis_server, tmp_path, "c"))
    async with running_gateway(cfg_a, instance="a") as a:
        await wait_until(lambda: a.gw.sync.connected, 10, what="A synced")
        old_doc = redis_server.cmd("GET", "kgtest:state")
        old_gen = redis_server.cmd("GET", "kgtest:gen")
        async with session.post(a.admin + "/v1/kill", headers=auth("killgate:kill"), json={
                "scope": "route", "route": "iris", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        # writes refused, and the document before the kill put back (its trail kept)
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "1")
        await wait_until(lambda: a.gw.sync.status()["writes_refused"] is not None, 10,
                         what="A's refused writes said")
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "0")
        redis_server.cmd("SET", "kgtest:state", old_doc)
        redis_server.cmd("SET", "kgtest:gen", old_gen)
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "1")
        assert (await status_of(session, a.url))[0] == 503  # (A holds the kill)
        async with running_gateway(cfg_c, instance="c") as c:
            sync = c.gw.sync
            await wait_until(lambda: sync.synced_once and sync.status()["writes_refused"], 10,
                             what="C's first sync")
            # a second of polls (100 ms each): none a sync
            await wait_until(lambda: time.monotonic() - sync.started_at > 1.0, 5,
                             interval=0.05, what="a second of polls")
            assert sync.last_ok is None, sync.status()
            assert "older than its audit trail" in (sync.last_error or ""), sync.status()
            # writes back: A repairs the store, C syncs onto the kill
            redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "0")
            await wait_until(lambda: sync.last_ok is not None, 10, what="C synced")
            assert "route:iris" in sync.holder.doc.kills
            assert sync.last_error is None
            assert (await status_of(session, c.url))[0] == 503


async def test_an_entry_anybody_can_append_does_not_make_a_start_no_sync(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    """The check reads the trail's newest entry: one the fleet's keys do not authenticate
    (anybody who can write to redis can XADD one) says nothing."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    for n in ("a", "c"):
        (tmp_path / n).mkdir()
    cfg_a = write_config(tmp_path / "a", routes, state=redis_state(redis_server, tmp_path, "a"))
    cfg_c = write_config(tmp_path / "c", routes, state=redis_state(redis_server, tmp_path, "c"))
    async with running_gateway(cfg_a, instance="a") as a:
        await wait_until(lambda: a.gw.sync.connected, 10, what="A synced")
        redis_server.cmd("XADD", "kgtest:audit", "*", "e",
                         '{"hash":"' + "ab" * 32 + '","action":"kill"}')
        async with running_gateway(cfg_c, instance="c") as c:
            await wait_until(lambda: c.gw.sync.last_ok is not None, 10, what="C synced")
            assert c.gw.sync.last_error is None
