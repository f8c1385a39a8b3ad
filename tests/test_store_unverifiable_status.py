"""A store that answers with a document this instance cannot verify is not a store that is
gone (found by review): /v1/status said `store.connected: false` and nothing else, so
`killgate status` said "store redis UNREACHABLE" and the console "store DISCONNECTED", and
the sync loop dropped and reopened its redis subscription on every attempt (about once a
second) though the store answered each one. Now /v1/status has `store.answering: true`
then, `killgate status` and the console say "UNVERIFIABLE (check state.signing_key_env)",
the loop logs `state_store_unverifiable` (never `state_store_lost`) and keeps its
connections. Real redis-server with a forged document, an in-process gateway (the code of
`killgate serve`)."""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.cli.admin import _status_text
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    free_port,
    running_gateway,
    two_versions,
    wait_until,
    wait_until_sync,
    write_config,
)
from tests.keyrig import forged_store
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(60)

UNVERIFIABLE = "UNVERIFIABLE (check state.signing_key_env)"


def _stat(redis: RedisServer, section: str, name: str) -> int:
    m = re.search(rf"^{name}:(?:calls=)?(\d+)", redis.cmd("INFO", section), re.M)
    return int(m.group(1)) if m else 0


def _subscribers(redis: RedisServer) -> set[str]:
    """The ids of the connections subscribed (the sync loop's subscription)."""
    return set(re.findall(r"^id=(\d+) ", redis.cmd("CLIENT", "LIST", "TYPE", "pubsub"), re.M))


def _loads(redis: RedisServer) -> int:
    """The documents read (each attempt loads the document by a script)."""
    return sum(_stat(redis, "commandstats", f"cmdstat_{c}") for c in ("evalsha", "eval"))


async def test_an_unverifiable_store_is_said_so_and_its_connections_kept(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="killgate")
    state = forged_store(redis_server, tmp_path)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg, "gw-a") as a:
        await wait_until(lambda: a.gw.ready_reason == "state_unverifiable"
                         and a.gw.sync.answering, 5, what="unverifiable, the store answering")
        async with session.get(f"{a.admin}/v1/status", headers=auth()) as r:
            assert r.status == 200, await r.text()
            st = await r.json()
        store = st["store"]
        assert store["connected"] is False and store["answering"] is True, store
        text = _status_text(st)
        assert f"store redis {UNVERIFIABLE}" in text, text
        assert "UNREACHABLE" not in text and "cannot reach the store" not in text, text

        # attempt after attempt reads the document again, over the connections it has
        subscribed, loads = _subscribers(redis_server), _loads(redis_server)
        assert len(subscribed) == 1, subscribed
        await wait_until(lambda: _loads(redis_server) >= loads + 3, 10,
                         what="three more attempts")
        assert _subscribers(redis_server) == subscribed  # (each attempt resubscribed)
        assert a.gw.sync.answering and not a.gw.sync.connected

        # the store gone: said unreachable, as before
        redis_server.kill()
        await wait_until(lambda: not a.gw.sync.answering, 5, what="the store gone")
        async with session.get(f"{a.admin}/v1/status", headers=auth()) as r:
            st = await r.json()
        assert st["store"]["answering"] is False
        assert "store redis UNREACHABLE" in _status_text(st)
    assert "state_store_lost" not in [r.getMessage() for r in caplog.records]


def test_the_console_says_unverifiable_not_disconnected(
        tmp_path: Path, redis_server: RedisServer, gateway_procs: Any, browser: Any) -> None:
    """The console's fleet panel, in a real Chromium, against a `killgate serve` facing a
    forged document: "store UNVERIFIABLE (check state.signing_key_env)", not "store
    DISCONNECTED"."""
    from tests.console_rig import start_backend

    state = forged_store(redis_server, tmp_path)
    backend, port = start_backend("v1")
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                           state=state)
        gw = gateway_procs(cfg)

        def answering() -> bool:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"{gw.admin}/v1/status", headers=auth()), timeout=2) as r:
                    return bool(json.loads(r.read())["store"]["answering"])
            except OSError:
                return False

        wait_until_sync(answering, 30, what="the gateway up, the store unverifiable")
        browser.sign_in(gw.admin, admin_token("killgate:read", "alice", 600), "alice")
        browser.wait(lambda d: UNVERIFIABLE in browser.text("#fleet-body"),
                     "the store said unverifiable", seen="#fleet-body")
        assert "DISCONNECTED" not in browser.text("#fleet-body")
    finally:
        backend.kill()
        backend.wait(5)
