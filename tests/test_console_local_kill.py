"""The emergency local kill from the operator console (found trying the store-down case as a
new user): with Redis stopped, a kill from the page answered 503 state_store_unavailable,
whose message names `killgate kill --local`, and the page offered nothing more: its operator
had to find a shell and the CLI at that moment. Now that error offers *Kill on this instance
only…*, the same kill sent with `?local=1`, which says where it holds and where not, and
its receipt is the local kill's (enforced here, not by other instances until merged).

A real in-process gateway (the code of `killgate serve`) on a real redis-server, which the
test stops; Chromium under Selenium in a thread while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.console_rig import Browser
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)

ADMIN = admin_token("killgate:admin", "frank", 10800)


def refused_then_local(b: Browser, admin: str, why: str) -> str:
    """Signed in, v2 of iris killed from the page with the reason `why`: the store's
    refusal (returned), then the local kill's dialog opened from it."""
    b.sign_in(admin, ADMIN, "frank")
    b.click("button[data-key='kill-iris/v2']")
    b.d.find_element("id", "action-reason").send_keys(why)
    b.click("#action-apply")
    err = b.wait(lambda d: b.text("#action-result [data-testid=api-error]"),
                 "the store's refusal")
    b.click("button[data-key='local-kill-version iris/v2']")
    b.wait(lambda d: "Emergency local kill" in b.text("#action-title"),
           "the local kill's dialog")
    return str(err)


async def test_a_kill_the_store_cannot_commit_offers_the_local_kill(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        redis_server.kill()
        await wait_until(lambda: not g.gw.sync.connected, 10, what="the store seen gone")
        b = browser

        def kill_from_the_page() -> tuple[str, str, str, str]:
            err = refused_then_local(b, g.admin, "INC-9: v2 bad, redis down")
            where = b.text("#action-changes")
            request = str(b.d.find_element("id", "action-request").get_attribute("textContent"))
            b.d.find_element("id", "action-reason").send_keys("INC-9: v2 bad, redis down")
            b.click("#action-apply")
            receipt = b.wait(lambda d: b.text("#action-result [data-testid=receipt]"),
                             "the local kill's receipt")
            return err, where, request, str(receipt)

        err, where, request, receipt = await asyncio.to_thread(kill_from_the_page)
        assert "503 state_store_unavailable" in err, err
        assert "THIS instance and its --workers group only" in where, where
        assert "POST /v1/kill?local=1&wait=" in request, request
        assert receipt.startswith("LOCAL KILL version:iris:v2 on "), receipt
        assert "NOT by other instances until the store answers" in receipt, receipt
        # enforced here: v2 takes no traffic
        for _ in range(10):
            async with session.post(g.url + "/v2/models/iris/infer", data=b"{}",
                                    headers={"x-killgate-pin": "v2"}) as r:
                assert r.headers.get("x-killgate-version") != "v2", r.headers


async def test_a_store_busy_with_a_script_offers_the_local_kill_too(
        tmp_path: Path, backends, redis_server: RedisServer, browser: Browser) -> None:
    """Redis answering -BUSY (a script past its time limit) refuses the kill as surely as
    a stopped one: the page says `state_store_busy` (SCRIPT KILL) and offers the same
    lever (it offered it for `state_store_unavailable` alone)."""
    from tests.test_redisbusy import busy_script

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        b = browser

        def kill_from_the_page() -> tuple[str, str]:
            err = refused_then_local(b, g.admin, "INC-9: v2 bad, redis busy")
            return err, str(b.text("#action-title"))

        with busy_script(redis_server):
            err, title = await asyncio.to_thread(kill_from_the_page)
        assert "503 state_store_busy" in err and "SCRIPT KILL" in err, err
        assert "Emergency local kill" in title, title
