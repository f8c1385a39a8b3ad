"""The console says a store that refuses every write (redis's own min-replicas-to-write:
-NOREPLICAS) as `killgate status` does (WRITES REFUSED): the fleet panel's store badge
"store WRITES REFUSED (redis's min-replicas-to-write)" beside "store connected" (it was
"store DISCONNECTED", and a STORE ERROR line: found by revdurable) and a WRITES REFUSED
warning line naming the local kill, gone once writes are taken again. In a real Chromium,
against a `killgate serve` on a real redis primary (and, later, its replica).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer, admin_token, wait_until_sync
from tests.test_replicas_console import store_console

pytestmark = pytest.mark.timeout(120)

BADGE = "store WRITES REFUSED (redis's min-replicas-to-write)"


def test_the_console_says_a_primary_refusing_writes(
        tmp_path: Path, redis_server: RedisServer, second_redis: RedisServer,
        gateway_procs: Any, browser: Any) -> None:
    with store_console(tmp_path, redis_server, gateway_procs, "kgnorepui") as (gw, store):
        wait_until_sync(lambda: store().get("connected") is True, 30, what="the gateway up")
        # (no replica, and redis's own setting asks for one: every write refused; no
        # state.min_replicas here: the refusal is said without it)
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "1")
        wait_until_sync(lambda: store().get("writes_refused") is not None, 30,
                        what="the refused writes said")
        browser.sign_in(gw.admin, admin_token("killgate:read", "alice", 600), "alice")
        browser.wait(lambda d: BADGE in browser.text("#fleet-body"),
                     "the store said refusing writes", seen="#fleet-body")
        assert "store connected" in browser.text("#fleet-body")
        assert "DISCONNECTED" not in browser.text("#fleet-body")
        browser.wait(lambda d: "WRITES REFUSED" in browser.text("#warnings"),
                     "the warning line", seen="#warnings")
        assert "killgate kill --local" in browser.text("#warnings")
        assert "STORE ERROR" not in browser.text("#warnings")

        second_redis.cmd("REPLICAOF", "127.0.0.1", str(redis_server.port))
        wait_until_sync(lambda: store().get("writes_refused", "") is None, 30,
                        what="writes taken again")
        browser.wait(lambda d: "WRITES REFUSED" not in browser.text("#fleet-body")
                     and "WRITES REFUSED" not in browser.text("#warnings"),
                     "the badge and the line gone", seen="#fleet-body")
