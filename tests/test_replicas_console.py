"""The console says a store primary without its replica (state.min_replicas) as `killgate
status` does: the fleet panel's store badge "store NOT DURABLE: the primary has 0 of 1
replicas (min_replicas)" and a NOT DURABLE warning line, gone once a replica is back. In a
real Chromium, against a `killgate serve` on a real redis primary (and, later, its replica).
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    RedisServer,
    admin_token,
    free_port,
    two_versions,
    wait_until_sync,
    write_config,
)
from tests.staterig import redis_section
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(120)

BADGE = "store NOT DURABLE: the primary has 0 of 1 replicas (min_replicas)"


@contextlib.contextmanager
def store_console(tmp_path: Path, redis_server: RedisServer, gateway_procs: Any, prefix: str,
                  **state: str) -> Iterator[tuple[Any, Callable[[], dict[str, Any]]]]:
    """A `killgate serve` on `redis_server` (one backend, polls 100 ms, heartbeats 200 ms,
    `state` added to its state section) and a reader of its /v1/status `store` ({} while it
    does not answer); the backend stopped after."""
    from tests.console_rig import start_backend

    backend, port = start_backend("v1")
    try:
        section = redis_section(redis_server.url, prefix, tmp_path / "snap.json",
                                poll_interval="100ms", heartbeat_interval="200ms", **state)
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                           state=section)
        gw = gateway_procs(cfg)

        def store() -> dict[str, Any]:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"{gw.admin}/v1/status", headers=auth()), timeout=2) as r:
                    return dict(json.loads(r.read())["store"])
            except OSError:
                return {}

        yield gw, store
    finally:
        backend.kill()
        backend.wait(5)


def test_the_console_says_a_primary_without_its_replica(
        tmp_path: Path, redis_server: RedisServer, second_redis: RedisServer,
        gateway_procs: Any, browser: Any) -> None:
    with store_console(tmp_path, redis_server, gateway_procs, "kgdurui", min_replicas="1",
                       replica_timeout="300ms") as (gw, store):
        def replicas() -> Any:
            return store().get("replicas")

        wait_until_sync(lambda: replicas() == {"connected": 0, "required": 1}, 30,
                        what="the gateway up, its primary without a replica")
        browser.sign_in(gw.admin, admin_token("killgate:read", "alice", 600), "alice")
        browser.wait(lambda d: BADGE in browser.text("#fleet-body"),
                     "the store said not durable", seen="#fleet-body")
        assert "store connected" in browser.text("#fleet-body")
        browser.wait(lambda d: "NOT DURABLE" in browser.text("#warnings"),
                     "the warning line", seen="#warnings")
        assert "answered 503 not_durable; bring a replica back" in browser.text("#warnings")

        second_redis.cmd("REPLICAOF", "127.0.0.1", str(redis_server.port))
        wait_until_sync(lambda: replicas() == {"connected": 1, "required": 1}, 30,
                        what="the replica back")
        browser.wait(lambda d: "NOT DURABLE" not in browser.text("#fleet-body")
                     and "NOT DURABLE" not in browser.text("#warnings"),
                     "the badge and the line gone", seen="#fleet-body")
