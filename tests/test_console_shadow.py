"""The operator console marks a route's shadow (found comparing a new model on real traffic
as a new user, issue #13): its row read `healthy`, `serving`, 0 %, with a *Promote* button,
like any version ready for traffic, and the promote dialog said nothing of it answering no
client so far. Now its row says `shadow` and `shadow: mirroring`, and promoting it says it is
the shadow and where its agreement is read.

A real in-process gateway (the code of `killgate serve`) with a real shadow; Chromium under
Selenium in a thread while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, write_config
from tests.console_rig import Browser

pytestmark = pytest.mark.timeout(60)

ADMIN = admin_token("killgate:admin", "erin", 10800)


async def test_the_shadow_is_marked_and_promoting_it_says_so(
        tmp_path: Path, backends, browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  shadow: {{version: v2, sample: 1.0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
""")
    async with running_gateway(cfg) as g:
        b = browser

        def look() -> tuple[str, str, str]:
            b.sign_in(g.admin, ADMIN, "erin")
            row = "article[data-route=iris] tr[data-version=v2]"
            b.wait(lambda d: "shadow: mirroring" in b.text(row), "the shadow marked",
                   seen="article[data-route=iris]")
            b.click("button[data-key='promote-iris/v2']")
            b.wait(lambda d: "Stable version" in b.text("#action-changes"), "the dialog")
            return (b.text(row + " th"), b.text(row + " [data-testid=state]"),
                    b.text("#action-changes"))

        name, state, changes = await asyncio.to_thread(look)
        assert "shadow" in name and "serving" not in state, (name, state)
        assert "v2 is this route's shadow" in changes, changes
        assert "killgate shadow report iris" in changes, changes
