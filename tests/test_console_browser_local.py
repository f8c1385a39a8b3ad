"""The operator console while the state store is down and an emergency local kill is in
force (POST /v1/kill?local=1), in a real browser (Chromium driven by Selenium). Before: the
console drew a local kill as any kill (KILLED ..., with an Unkill button that cannot lift it
before the merge) and said nothing of a refused journal, while `killgate status` printed
LOCAL KILL NOT IN STORE / LOCAL KILLS REFUSED: the page looked as if the fleet enforced a
kill only this instance does. Now both are warnings at the top, worst first, and the kill
is marked "LOCAL — not yet in the store", offered no Unkill.

A real in-process gateway (the code of `killgate serve`) on a real redis-server, stopped;
the browser runs in a thread while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from gateway.state.localkills import LocalEntry, LocalKills
from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, running_gateway, two_versions, write_config
from tests.console_rig import Browser
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)

BOB = admin_token("killgate:read killgate:kill", "bob", 10800)
V2 = {"scope": "version", "route": "iris", "version": "v2", "reason": "v2 answers garbage"}


async def test_a_local_kill_and_a_refused_journal_are_shown_loudly(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2), state=redis_state(redis_server, tmp_path))
    # a journal signed with another key is there at start: refused whole
    forged = Keyring(Key.of(b"another-key-0123456789-abcdefghijklmnopq"), context="kgtest")
    LocalKills(tmp_path / "snapshot-a.json.local-kills", forged).add(
        LocalEntry.new("route", "iris", None, "mallory", "forged", "t", "x", 0, True))
    async with running_gateway(cfg) as g:
        b = browser

        def refused() -> str:
            b.quick_rounds()
            b.sign_in(g.admin, BOB, "bob")
            b.wait(lambda d: "LOCAL KILLS REFUSED" in b.text("#warnings"),
                   "the refused journal warned of", seen="#warnings")
            return b.text("#warnings")

        shown = await asyncio.to_thread(refused)
        assert "none of its kills is enforced or merged" in shown, shown
        redis_server.kill()
        async with session.post(g.admin + "/v1/kill?local=1", json=V2,
                                headers={"Authorization": f"Bearer {BOB}"}) as r:
            assert r.status == 202, await r.text()

        def local() -> tuple[str, str]:
            b.wait(lambda d: "LOCAL KILL NOT IN STORE" in b.text("#warnings"),
                   "the local kill warned of", seen="#warnings")
            b.wait(lambda d: "LOCAL — not yet in the store" in b.text("#kills-body"),
                   "the local kill marked", seen="#kills-body")
            assert not b.d.find_elements(By.CSS_SELECTOR, "#kills-body button[data-key^='unkill-']")
            return b.text("#warnings"), b.text("#kills-body")

        warned, kills = await asyncio.to_thread(local)
        assert "version:iris:v2" in warned and "by bob" in warned, warned
        assert "NOT by the rest of the fleet" in warned, warned
        assert "LOCAL KILLS REFUSED" not in warned, warned  # (moved aside by the new one)
        assert "enforced on this instance only" in kills, kills
        redis_server.start()
