"""The console's whole-trail check after the store lost its trail (found trying a redis
restart without persistence as a new user): the page said only "Chain BROKEN at event
(oldest): the oldest event does not start the chain", where `killgate audit verify` says the
events before it were lost and where they are kept. It now says so too, and that the events
from the oldest on verify (the browser checks every one of them).

A real in-process gateway on a real redis-server, flushed by the test; Chromium under
Selenium in a thread while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, running_gateway, two_versions, wait_until, write_config
from tests.console_rig import Browser
from tests.test_keyed_audit import actions
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)

READER = admin_token("killgate:read", "gina", 10800)


async def test_a_lost_trail_start_is_named_as_a_loss(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        browser: Browser) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 1)
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: redis_server.cmd("EXISTS", "kgtest:state") == "1", 10,
                         what="the re-seed")
        await actions(session, g.admin, 1)  # the re-seed, a kill, an unkill
        b = browser

        def verify_all() -> str:
            b.sign_in(g.admin, READER, "gina")
            b.click("button[data-key='audit-verify-all']")
            return str(b.wait(lambda d: "were lost" in b.text(".chain") and b.text(".chain"),
                              "the whole trail checked", seen=".chain"))

        line = await asyncio.to_thread(verify_all)
        assert "the trail starts after events the store no longer holds" in line, line
        assert "(3 event(s) from its oldest on verify here)" in line, line
