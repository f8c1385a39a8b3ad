"""The operator console during a rolling upgrade, in a real browser (Chromium driven by
Selenium): an approval request a NEWER killgate wrote into the shared state is listed, marked
as from a newer version (which one, and where it is decided), and offered no Approve…: the
API refuses it (409 approval_from_newer_version). Found by review improt2: the console
offered Approve… on it, and the approver met the refusal only after reviewing the change and
writing a reason. A request of this version beside it keeps its Approve….

A real in-process gateway (the code of `killgate serve`) on a real redis-server; the browser
runs in a thread while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, running_gateway, two_versions, write_config
from tests.console_rig import Browser
from tests.test_approval_newer_version import _record
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)

BOB = admin_token("killgate:read killgate:kill", "bob", 10800)


async def test_a_newer_versions_request_is_shown_as_such_without_approve(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        browser: Browser) -> None:
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2}\n")
    newer, ours = "ap-00000000000000d1", "ap-00000000000000d2"
    records = {newer: _record(newer, "unkill", {"drain_first": True}, format=2,
                              written_by="killgate 0.3.0"),
               ours: _record(ours, "unkill", {})}
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals=records),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": newer}, "newer version"))
        b = browser

        def look() -> tuple[str, str]:
            b.quick_rounds()
            b.sign_in(g.admin, BOB, "bob")
            item = f"#approvals-body li[data-approval='{newer}']"
            b.wait(lambda d: "1 of 2" in b.text(item), "the newer request listed",
                   seen="#approvals")
            b.wait(lambda d: b.d.find_elements(By.CSS_SELECTOR,
                                               f"button[data-key='approve-{ours}']"),
                   "this version's request with its Approve…", seen="#approvals")
            assert not b.d.find_elements(By.CSS_SELECTOR, f"button[data-key='approve-{newer}']")
            assert b.d.find_elements(By.CSS_SELECTOR, f"button[data-key='decline-{newer}']")
            return b.text(item), b.text(f"{item} [data-testid=from-newer-version]")

        shown, why = await asyncio.to_thread(look)
        assert "from a newer version" in shown, shown
        assert "requested on killgate 0.3.0" in why, why
        assert "approve it through an instance of that version" in why, why
        # (what the console no longer offers: the API refuses it)
        async with session.post(g.admin + f"/v1/approvals/{newer}/approve",
                                json={"reason": "ok"},
                                headers={"Authorization": f"Bearer {BOB}"}) as r:
            assert r.status == 409
            assert (await r.json())["error"]["type"] == "approval_from_newer_version"


CAROL = admin_token("killgate:read killgate:rollout", "carol", 10800)
DANA = admin_token("killgate:admin", "dana", 10800)


async def test_decline_of_an_unknown_action_is_offered_only_with_admin(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        browser: Browser) -> None:
    """A newer version's request of an action this version does not know takes
    killgate:admin to decline here (403 with a note otherwise). The console offered
    Decline… to any token of the action's apparent scope, and the decliner met the 403
    after writing a reason (found by review). Now a token without admin is told why; one
    with it keeps Decline…."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2}\n")
    pause = "ap-00000000000000d3"
    records = {pause: _record(pause, "pause_route", {}, format=2, written_by="killgate 0.3.0")}
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals=records),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": pause}, "newer version"))
        async with session.get(g.admin + "/v1/approvals",
                               headers={"Authorization": f"Bearer {CAROL}"}) as r:
            listed = (await r.json())["approvals"]
        assert listed[0]["from_newer_version"]["decline_scope"] == "killgate:admin", listed
        b = browser
        item = f"#approvals-body li[data-approval='{pause}']"

        def look(tok: str, who: str) -> tuple[bool, str]:
            b.quick_rounds()
            b.sign_in(g.admin, tok, who)
            b.wait(lambda d: "from a newer version" in b.text(item), "the newer request",
                   seen="#approvals")
            return (bool(b.d.find_elements(By.CSS_SELECTOR,
                                           f"button[data-key='decline-{pause}']")),
                    b.text(item))

        offered, shown = await asyncio.to_thread(look, CAROL, "carol")
        assert not offered, shown
        assert "declining it here takes killgate:admin, which this token does not have" \
            in shown, shown
        # (what it no longer offers: the API refuses it, and nothing changes)
        async with session.post(g.admin + f"/v1/approvals/{pause}/decline",
                                json={"reason": "no"},
                                headers={"Authorization": f"Bearer {CAROL}"}) as r:
            assert r.status == 403, await r.text()
        assert pause in g.gw.holder.doc.approvals
        offered, shown = await asyncio.to_thread(look, DANA, "dana")
        assert offered and "which this token does not have" not in shown, shown
