"""The operator console in a real browser (Chromium driven by Selenium), against a real fleet.

Two `killgate serve` processes share a real redis-server; three real model-server
processes back two routes (`iris`, 90/10, and `iris-beta`, a canary with analysis and
progressive steps); a thread sends a little traffic the whole time. One browser session
serves the module. Screenshots go to tests/artifacts/console/ (or $KILLGATE_ARTIFACTS);
with KILLGATE_UPDATE_DOCS=1 the canary screenshot also replaces docs/console.png.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from gateway.domain.audit import canonical
from tests.chromium import ARTIFACTS, Browser, shown
from tests.conftest import (
    ROOT,
    admin_token,
    wait_until_sync,
)
from tests.console_rig import BODY, INFER, Fleet, nginx_proxy, running_fleet
from tests.test_reload import atomic_write

pytestmark = pytest.mark.timeout(120)

RECEIPT = re.compile(r"^generation \d+: applied by 2/2 instance\(s\) in [\d.]+ ms")


def token(sub: str, scope: str) -> str:
    return admin_token(scope, sub, 10800)


KILLER = token("alice", "killgate:read killgate:kill")
READER = token("bob", "killgate:read")
ADMIN = token("carol", "killgate:admin")
APPROVER = token("bob", "killgate:read killgate:kill")  # bob again, now allowed to approve
GLASS = token("dave", "killgate:read killgate:kill killgate:breakglass")
# lifting a route kill needs two principals (the requester counts as one); nothing else in
# this module unkills a route, so the other tests are not gated
APPROVALS = "approvals:\n  unkill_route: 2\n"


# --------------------------------------------------------------------------- the fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("console"), extra=APPROVALS) as fl:
        yield fl


@pytest.fixture(scope="module", autouse=True)
def _quick_rounds(browser: Browser) -> None:
    """What the tests wait for is drawn by the page's next refresh round: every 1 s here,
    not 3 (tests/console_rig.py `Browser.quick_rounds`; no test here is about the period)."""
    browser.quick_rounds()


def _row(version: str, route: str = "iris") -> str:
    return f"article[data-route='{route}'] tr[data-version='{version}']"


def _apply(b: Browser, reason: str, confirm: bool = False) -> str:
    """Fill the open action dialog and apply it; the receipt's text."""
    apply = b.d.find_element(By.ID, "action-apply")
    assert not apply.is_enabled(), "applied without a reason"
    b.d.find_element(By.ID, "action-reason").send_keys(reason)
    if confirm:
        assert not apply.is_enabled(), "applied without the confirmation"
        b.click("#action-confirm")
    assert apply.is_enabled()
    apply.click()
    return str(b.wait(lambda d: b.text("#action-result [data-testid]"), "the receipt"))


# --------------------------------------------------------------------------- the tests


def test_kill_scoped_operator_kills_v2_sees_it_everywhere_and_unkills(fleet: Fleet,
                                                                      browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    assert b.text("[data-testid=scopes]") == "killgate:kill killgate:read"
    b.wait(lambda d: b.text("[data-testid=fleet-live]").startswith("2 live"), "two instances")
    assert len(b.d.find_elements(By.CSS_SELECTOR, "#fleet-body tbody tr")) == 2
    assert "1 config digest(s)" in b.text("#fleet-body") and "differs" not in b.text("#fleet-body")
    # each instance's build in the fleet list (both run this tree: one build, no note)
    from gateway.buildid import build_id
    b.wait(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=fleet-build]")]
           == [build_id()] * 2, "each instance's build")
    assert not b.d.find_elements(By.CSS_SELECTOR, "[data-testid=fleet-builds]")
    v1, v2 = b.text(_row("v1")), b.text(_row("v2"))
    assert "90" in v1 and "90 %" in v1 and "10" in v2 and "10 %" in v2, (v1, v2)
    assert "serving" in v2
    # a kill-scoped token: kill buttons, no rollout ones
    assert b.d.find_elements(By.CSS_SELECTOR, "button[data-key='kill-iris/v2']")
    assert not b.d.find_elements(By.CSS_SELECTOR, "button[data-key^='promote-'], "
                                                  "button[data-key^='weights-']")

    b.click("button[data-key='kill-iris/v2']")
    assert not b.d.find_element(By.ID, "action-confirm").is_displayed()  # a version kill: no
    changes = b.text("#action-changes")
    assert "Kill flag version iris/v2" in changes and "10 % → 0 %" in changes, changes
    receipt = _apply(b, "INC-7: v2 returns garbage")
    assert RECEIPT.match(receipt), receipt
    b.shot("kill-receipt.png")
    b.click("#action-cancel")

    b.wait(lambda d: "KILLED" in b.text(_row("v2") + " [data-testid=state]"), "v2 shown killed")
    assert "version iris/v2" in b.text("#kills-body") and "INC-7" in b.text("#kills-body")
    b.wait(lambda d: "INC-7: v2 returns garbage" in b.text("table.audit tbody tr:first-child"),
           "the kill in the audit trail")
    first = b.text("table.audit tbody tr:first-child")
    assert "alice" in first and "kill" in first and "version iris/v2" in first, first
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    b.shot("killed.png")
    # the data plane of both instances: v2 answers nothing, not even when pinned
    for gw in (0, 1):
        assert fleet.served_by(gw, 30) == {"v1"}
        assert fleet.served_by(gw, 3, {"x-killgate-pin": "v2"}) == {"v1"}

    b.click("button[data-key='unkill-iris/v2']")
    assert "Lift the kill" in b.text("#action-title")
    assert b.d.find_element(By.ID, "action-confirm").is_displayed()
    receipt = _apply(b, "INC-7: v2.1 deployed", confirm=True)
    assert RECEIPT.match(receipt), receipt
    b.click("#action-cancel")
    b.wait(lambda d: "serving" in b.text(_row("v2") + " [data-testid=state]"), "v2 serving")
    assert fleet.api("GET", "/v1/status", READER, gw=1)["kills"] == []
    for gw in (0, 1):
        assert fleet.served_by(gw, 3, {"x-killgate-pin": "v2"}) == {"v2"}
    assert not [e for e in b.drain() if e["level"] == "SEVERE"], b.console


def test_an_unkill_from_the_page_lifts_the_kill_it_showed_only(fleet: Fleet,
                                                               browser: Browser) -> None:
    """The dialog shows one kill (who, why); lifted and made again by another incident
    before Apply, the page's unkill lifted the new kill, which the operator never saw.
    Now it is refused (409 kill_replaced) and the new kill stays."""
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    fleet.api("POST", "/v1/kill", KILLER, body={**sel, "reason": "first incident"})
    b.wait(lambda d: b.d.find_elements(By.CSS_SELECTOR, "button[data-key='unkill-iris/v2']"),
           "the unkill button")
    b.click("button[data-key='unkill-iris/v2']")
    fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "fixed elsewhere"})
    fleet.api("POST", "/v1/kill", KILLER, body={**sel, "reason": "second incident"})
    b.d.find_element(By.ID, "action-reason").send_keys("INC-8: done")
    b.click("#action-confirm")
    b.d.find_element(By.ID, "action-apply").click()
    shown = str(b.wait(lambda d: b.text("#action-result [data-testid]"), "the answer"))
    assert "kill_replaced" in shown or "not the one" in shown, shown
    b.click("#action-cancel")
    (kill,) = fleet.api("GET", "/v1/status", READER)["kills"]
    assert kill["reason"] == "second incident", kill
    fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "clean up"})


def test_a_global_kill_needs_its_confirmation_and_stops_every_route(fleet: Fleet,
                                                                   browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    b.click("button[data-key='kill-global']")
    assert b.d.find_element(By.ID, "action-confirm").is_displayed()
    assert "stop ALL traffic" in b.text("#action-confirm-label")
    assert RECEIPT.match(_apply(b, "INC-8: drill", confirm=True))
    b.click("#action-cancel")
    b.wait(lambda d: "KILLED (global)" in b.text("article[data-route='iris'] header"),
           "the global kill on the route")
    # each version says which kill stops it: the global one, not a route kill there is none of
    state = b.text(_row("v1") + " td[data-testid=state]")
    assert state == "KILLED (global)", state
    for gw in (0, 1):
        conn = http.client.HTTPConnection("127.0.0.1", fleet.gateways[gw].data_port, timeout=5)
        conn.request("POST", INFER, BODY)
        r = conn.getresponse()
        r.read()
        conn.close()
        assert r.status == 503 and r.headers["x-killgate-decision"] == "killed"
    b.click("button[data-key='unkill-global']")
    assert RECEIPT.match(_apply(b, "INC-8: drill over", confirm=True))
    b.click("#action-cancel")
    b.wait(lambda d: "No kill in force" in b.text("#kills-body"), "the global kill lifted")
    assert fleet.served_by(1, 3) <= {"v1", "v2"}


def test_keyboard_reaches_a_kill_button_and_the_dialog(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    b.d.find_element(By.TAG_NAME, "body").click()
    keys = ActionChains(b.d)
    for _ in range(60):
        keys.send_keys(Keys.TAB).perform()
        if b.d.execute_script("return document.activeElement.dataset.key") == "kill-iris/v2":
            break
    else:
        pytest.fail("Tab never reached the Kill v2 button")
    outline = b.d.execute_script("const s = getComputedStyle(document.activeElement);"
                                 "return [s.outlineStyle, s.outlineWidth]")
    assert outline[0] != "none" and outline[1] != "0px", outline  # focus is visible
    keys.send_keys(Keys.ENTER).perform()
    b.wait(lambda d: d.find_element(By.ID, "action-dialog").get_attribute("open") is not None,
           "the dialog")
    assert b.d.execute_script("return document.activeElement.id") == "action-reason"
    keys.send_keys("only looking").perform()
    keys.send_keys(Keys.ESCAPE).perform()
    b.wait(lambda d: d.find_element(By.ID, "action-dialog").get_attribute("open") is None,
           "the dialog to close")
    assert fleet.api("GET", "/v1/status", READER)["kills"] == []


def test_narrow_window_and_1280x720_fit(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    overflow = "return document.documentElement.scrollWidth - window.innerWidth"
    assert b.d.execute_script(overflow) <= 0
    b.shot("1280x720.png")
    b.d.set_window_size(420, 900)
    b.wait(lambda d: d.execute_script("return window.innerWidth") <= 420, "a narrow window")
    assert b.d.execute_script(overflow) <= 0, "the page scrolls sideways when narrow"
    kill = b.wait(lambda d: shown(d, "button[data-key='kill-iris/v2']"), "the kill button")
    assert kill.is_displayed()
    b.shot("narrow.png")


def test_a_long_reason_does_not_push_the_page_sideways(fleet: Fleet, browser: Browser) -> None:
    """A kill whose reason is a long link (an incident URL, as reasons often are): the kill
    switch panel's line did not wrap, so on a phone the page scrolled sideways and the
    Unkill button sat off screen."""
    sel = {"scope": "version", "route": "iris-beta", "version": "v3"}
    url = "https://incidents.example.com/INC-42/" + "x" * 300
    fleet.api("POST", "/v1/kill?wait=2s", KILLER, body={**sel, "reason": url})
    b = browser
    try:
        b.sign_in(fleet.admin, KILLER, "alice")
        b.d.set_window_size(420, 900)
        b.wait(lambda d: d.execute_script("return window.innerWidth") <= 420, "a narrow window")
        b.wait(lambda d: "INC-42" in b.text("#kills-body"), "the kill with its reason")
        over = b.d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert over <= 0, f"the page scrolls {over} px sideways"
        right = b.d.execute_script("return document.querySelector(\"#kills-body "
                                   "button[data-key='unkill-version iris-beta/v3']\")"
                                   ".getBoundingClientRect().right")
        assert right <= 420, right
        b.click("#kills-body button[data-key='unkill-version iris-beta/v3']")  # its dialog too
        wide = b.d.execute_script("const f = document.getElementById('action-form');"
                                  "return f.scrollWidth - f.clientWidth")
        assert wide <= 0, f"the dialog scrolls {wide} px sideways"
        b.click("#action-cancel")
    finally:
        b.d.set_window_size(1280, 720)
        fleet.api("POST", "/v1/unkill?wait=2s", KILLER, body={**sel, "reason": "t over"})


def test_read_only_token_sees_no_actions_and_a_forced_kill_is_refused(fleet: Fleet,
                                                                     browser: Browser) -> None:
    b = browser
    b.drain()
    b.sign_in(fleet.admin, READER, "bob")
    b.wait(lambda d: "serving" in b.text(_row("v2")), "the versions")
    buttons = [e.text for e in b.d.find_elements(By.CSS_SELECTOR, "#main button")]
    assert buttons == ["Verify the whole trail"], buttons
    # the approvals and drills panels show exactly when the API offers them
    with urllib.request.urlopen(fleet.admin + "/openapi.json", timeout=5) as r:
        paths = json.loads(r.read())["paths"]
    for panel, path in (("approvals", "/v1/approvals"), ("drills", "/v1/drills")):
        shown = b.d.find_element(By.ID, panel).is_displayed()
        assert shown == (path in paths), (panel, shown)
    # (not the generation: iris-beta's progressive canary may take a step meanwhile)
    audited = fleet.api("GET", "/v1/audit?limit=1000", READER)["events"]
    forced = b.d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/js/api.js').then((api) => api.call('POST', '/v1/kill?wait=1s',
            {scope: 'version', route: 'iris', version: 'v2', reason: 'forced from the console'}))
          .then((r) => done({status: r.status}),
                (e) => done({status: e.status, type: e.type, message: e.apiMessage}));""")
    assert forced == {"status": 403, "type": "forbidden",
                      "message": "the token lacks the scope 'killgate:kill'"}, forced
    assert fleet.api("GET", "/v1/status", READER)["kills"] == []
    since = fleet.api("GET", "/v1/audit?limit=1000", READER)["events"][:-len(audited) or None]
    assert [e for e in since if e["action"] == "kill"] == [], since
    assert fleet.served_by(0, 3, {"x-killgate-pin": "v2"}) == {"v2"}
    refused = [e for e in b.drain() if e["level"] == "SEVERE"]
    assert all("/v1/kill" in e["message"] and "403" in e["message"] for e in refused), \
        [e["message"] for e in refused]


def test_drills_show_while_open_and_in_the_history(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    opened = fleet.api("POST", "/v1/drills?wait=2s", ADMIN, body={
        "kind": "kill", "route": "iris", "version": "v2", "production": True,
        "reason": "game day: can we kill v2?"})
    drill = opened["drill"]
    b.wait(lambda d: "running" in b.text("#drills-body") and drill in b.text("#drills-body"),
           "the open drill", seen="#drills")
    assert "kill drill on iris/v2" in b.text("#drills-body")
    # (a drill that changed nothing cannot end passed: it kills v2, and puts it back)
    for step in ("inject", "restore"):
        fleet.api("POST", f"/v1/drills/{drill}/{step}?wait=2s", ADMIN, body={"reason": "r"})
    fleet.api("POST", f"/v1/drills/{drill}/end?wait=2s", ADMIN, body={
        "verdict": "passed", "reason": "game day over",
        "summary": {"time_to_kill_ms": {"p50": 2.5, "p99": 4.0, "max": 4.5}, "leaks": 0,
                    "errors": 0}})
    b.wait(lambda d: "running" not in b.text("#drills-body")
           and "passed" in b.text("#drills-body tbody tr:first-child"), "the drill's result",
           seen="#drills")
    row = b.text("#drills-body tbody tr:first-child")
    assert "kill" in row and "iris/v2" in row and "p50 2.5 ms, p99 4 ms, max 4.5 ms" in row, row
    b.click("#nav-drills")  # the panel has its place in the page's own table of contents
    b.wait(lambda d: d.execute_script("return location.hash") == "#drills", "the jump")
    b.shot("drills.png")


def test_signed_in_by_a_proxy_the_page_holds_no_token(fleet: Fleet, browser: Browser,
                                                      tmp_path: Path) -> None:
    b = browser
    proc, url = nginx_proxy(tmp_path, fleet.gateways[1].admin_port, KILLER)
    try:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "alice", "signed in by the proxy")
        assert "through your proxy" in b.text("#who")
        assert not b.d.find_element(By.ID, "signout").is_displayed()  # nothing to sign out of
        assert b.d.execute_script("return sessionStorage.length") == 0
        b.wait(lambda d: "serving" in b.text(_row("v2")), "the routes through the proxy")
        assert b.d.find_elements(By.CSS_SELECTOR, "button[data-key='kill-iris/v2']")
        b.shot("proxy.png")
        # the proxy's session is now another principal's (bob, read only): the page said
        # alice, with her kill buttons, until it was reloaded
        conf = tmp_path / "nginx.conf"
        conf.write_text(conf.read_text().replace(KILLER, READER))
        proc.send_signal(signal.SIGHUP)  # nginx reloads its config
        b.wait(lambda d: b.text("[data-testid=subject]") == "bob", "bob shown signed in",
               timeout=10)
        b.wait(lambda d: "serving" in b.text(_row("v2")), "the routes again")
        assert not b.d.find_elements(By.CSS_SELECTOR, "button[data-key='kill-iris/v2']")
    finally:
        b.d.get(fleet.admin + "/ui/")  # leave the proxy's origin before it goes
        proc.terminate()
        proc.wait(10)


def test_admin_sets_weights_releases_and_verifies_the_whole_trail(fleet: Fleet,
                                                                  browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, ADMIN, "carol")
    b.click("button[data-key='weights-iris']")

    def weights(w1: str, w2: str) -> None:
        for version, weight in (("v1", w1), ("v2", w2)):
            box = b.d.find_element(By.ID, f"f-w-{version}")
            box.clear()
            box.send_keys(weight)

    # the API refuses: its error shows as it wrote it, and the dialog stays to be fixed
    weights("0", "0")
    assert _apply(b, "nothing anywhere") == "400 bad_request: at least one weight must be > 0"
    assert b.d.find_element(By.ID, "action-apply").is_enabled()
    weights("80", "20")
    changes = b.text("#action-changes")
    assert "v2 weight" in changes and "20 (20 % before kills and health)" in changes, changes
    b.d.find_element(By.ID, "action-apply").click()  # the same reason, fixed weights
    b.wait(lambda d: RECEIPT.match(b.text("#action-result [data-testid]")), "the receipt")
    b.click("#action-cancel")
    b.wait(lambda d: "latched" in b.text("article[data-route='iris'] header"), "the latch")
    b.wait(lambda d: "20 %" in b.text(_row("v2")), "v2 at 20 %")
    assert "10" in b.text(_row("v2") + " td.num")  # the file's weight, still shown
    # an audit event with floats (weights 80.0) re-hashed in the browser: exact text kept
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    b.click("button[data-key='release-iris']")
    assert "v1 90, v2 10" in b.text("#action-changes")
    assert RECEIPT.match(_apply(b, "weights test: back to the file"))
    b.click("#action-cancel")
    b.wait(lambda d: "latched" not in b.text("article[data-route='iris'] header"), "released")
    # The whole trail's verdict stands for the audit page shown when it was asked for: a
    # page that changes (the release's event drawn by a later refresh) replaces it with
    # the page's own verdict. So verify once the page shows the newest event.
    b.wait(lambda d: "weights test: back to the file" in b.text(
        "table.audit tbody tr:first-child"), "the release in the audit trail")
    b.click("button[data-key='audit-verify-all']")
    b.wait(lambda d: "for the whole trail (" in b.text(".chain"), "the whole trail verified")
    assert "Chain verified" in b.text(".chain"), b.text(".chain")


def test_admin_promotes_then_rolls_back_from_the_page(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, ADMIN, "carol")
    b.click("button[data-key='promote-iris/v2']")
    assert "Stable version: v1 → v2" in b.text("#action-changes")
    assert RECEIPT.match(_apply(b, "v2 is good"))
    b.click("#action-cancel")
    b.wait(lambda d: "stable" in b.text(_row("v2") + " th") and "100 %" in b.text(_row("v2")),
           "v2 stable with all the traffic")
    assert fleet.served_by(1, 10) == {"v2"}
    b.click("button[data-key='rollback-iris']")
    to = b.d.find_element(By.ID, "f-to")
    assert to.get_attribute("value") == "v1"  # the previous known good, preselected
    assert "Stable version: v2 → v1" in b.text("#action-changes")
    assert RECEIPT.match(_apply(b, "v2 was not so good"))
    b.click("#action-cancel")
    b.wait(lambda d: "stable" in b.text(_row("v1") + " th") and "100 %" in b.text(_row("v1")),
           "v1 stable again")
    assert fleet.served_by(0, 10) == {"v1"}
    b.click("button[data-key='release-iris']")
    assert RECEIPT.match(_apply(b, "back to the file"))
    b.click("#action-cancel")
    b.wait(lambda d: "90 %" in b.text(_row("v1")), "the file's 90/10")


def _route_kills(fleet: Fleet) -> list[dict[str, object]]:
    return [k for k in fleet.api("GET", "/v1/status", READER, gw=1)["kills"]
            if k["scope"] == "route" and k["route"] == "iris"]


@pytest.mark.timeout(180)
def test_two_person_unkill_approval_self_approval_decline_and_break_glass(
        fleet: Fleet, browser: Browser) -> None:
    """Against the real approvals API (`approvals: {unkill_route: 2}`): the requester's
    unkill waits, the requester cannot approve it, a second principal applies it with its
    receipt, a decline blocks, and break-glass skips the wait, loudly."""
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    b.click("button[data-key='kill-route-iris']")
    assert RECEIPT.match(_apply(b, "INC-9: iris answers garbage"))
    b.click("#action-cancel")
    b.click("button[data-key='unkill-route-iris']")
    assert not b.d.find_elements(By.ID, "f-bg")  # alice has no killgate:breakglass
    pending = _apply(b, "INC-9: fixed upstream", confirm=True)
    m = re.match(r"Needs approval: 1 of 2 principal\(s\) so far \(request (ap-[0-9a-f]{16})",
                 pending)
    assert m, pending
    ident = m.group(1)
    # not applied: never drawn as a success (console review 2)
    assert "ok" not in (b.d.find_element(By.CSS_SELECTOR, "#action-result p")
                        .get_attribute("class") or "").split()
    b.click("#action-cancel")
    item = f"#approvals-body li[data-approval='{ident}']"
    b.wait(lambda d: "1 of 2" in b.text(item), "the request in the approvals panel",
           seen="#approvals")
    shown_item = b.text(item)
    assert "unkill" in shown_item and "route iris" in shown_item and "alice" in shown_item \
        and "INC-9: fixed upstream" in shown_item, shown_item
    assert _route_kills(fleet), "the unkill applied without its approval"
    # her own request: no Approve… (the API refuses self-approval), and the panel says why
    assert not b.d.find_elements(By.CSS_SELECTOR, f"button[data-key='approve-{ident}']")
    assert "another principal must approve it" in b.text(f"{item} [data-testid=own-request]")
    assert _route_kills(fleet)

    # bob, from his own console session, approves the change he reviewed (its hash)
    b.sign_in(fleet.admin, APPROVER, "bob")
    waiting = fleet.api("GET", "/v1/approvals", READER)["approvals"]
    assert [a["id"] for a in waiting] == [ident]
    b.click(f"button[data-key='approve-{ident}']")
    assert "applied now" in b.text("#action-changes")
    said = b.text("#action-changes")  # which request, before anything is confirmed
    assert f"Request {ident}: unkill route iris (key route:iris), asked by alice: " \
        "“INC-9: fixed upstream”" in said, said
    assert "The kill it lifts: route:iris, set by alice" in said and "INC-9: iris answers" in said
    sent = b.d.find_element(By.ID, "action-request").get_attribute("textContent")
    assert f"/v1/approvals/{ident}/approve" in sent and waiting[0]["hash"] in sent, sent
    # approving it lifts the kill: the explicit confirmation every unkill needs (it was
    # applied with a reason alone)
    assert b.text("#action-confirm-label") == \
        "Yes: lift the kill on route iris now and let traffic flow again"
    receipt = _apply(b, "reviewed the fix", confirm=True)
    assert RECEIPT.match(receipt) and "approved by alice, bob" in receipt, receipt
    b.click("#action-cancel")
    b.wait(lambda d: "No request is waiting" in b.text("#approvals-body"), "the request gone",
           seen="#approvals")
    assert _route_kills(fleet) == []
    assert fleet.served_by(1, 3) <= {"v1", "v2"}
    b.wait(lambda d: "approved by alice, bob" in b.text("table.audit tbody tr:first-child"),
           "the approval in the audit trail", seen="#audit")
    first = b.text("table.audit tbody tr:first-child")
    assert "unkill" in first and "route iris" in first, first

    # a decline blocks: the request is dropped and the kill stays
    fleet.api("POST", "/v1/kill?wait=2s", KILLER,
              body={"scope": "route", "route": "iris", "reason": "INC-10: again"})
    asked = fleet.api("POST", "/v1/unkill?wait=2s", KILLER,
                      body={"scope": "route", "route": "iris", "reason": "INC-10: fixed?"})
    ident = asked["approval"]["id"]
    b.click(f"button[data-key='decline-{ident}']")
    assert "declined: dropped, nothing applied" in b.text("#action-changes")
    receipt = _apply(b, "not fixed yet, see the error rate")
    assert receipt.startswith(f"Declined: request {ident} dropped, nothing applied"), receipt
    b.click("#action-cancel")
    b.wait(lambda d: "No request is waiting" in b.text("#approvals-body"), "the request gone",
           seen="#approvals")
    assert _route_kills(fleet)
    assert fleet.api("GET", "/v1/approvals", READER)["approvals"] == []
    b.wait(lambda d: "approval.decline" in b.text("table.audit tbody tr:first-child"),
           "the decline in the audit trail", seen="#audit")

    # break-glass: dave skips the approval; the reason stays mandatory, the trail says so
    b.sign_in(fleet.admin, GLASS, "dave")
    refused = b.d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/js/api.js').then((api) => api.call('POST', '/v1/unkill?wait=1s',
            {scope: 'route', route: 'iris', break_glass: true, reason: ' '}))
          .then((r) => done({status: r.status}),
                (e) => done({status: e.status, type: e.type}));""")
    assert refused == {"status": 400, "type": "bad_request"}, refused
    b.click("button[data-key='unkill-route-iris']")
    b.click("#f-bg")
    assert "skipped: applied at once as break glass" in b.text("#action-changes")
    assert '"break_glass": true' in \
        b.d.find_element(By.ID, "action-request").get_attribute("textContent")
    receipt = _apply(b, "INC-10: customers waiting, nobody to approve", confirm=True)
    assert RECEIPT.match(receipt) and "break glass" in receipt, receipt
    b.click("#action-cancel")
    assert _route_kills(fleet) == []
    b.wait(lambda d: "BREAK GLASS" in b.text("table.audit tbody tr:first-child"),
           "break-glass in the audit trail", seen="#audit")
    first = b.text("table.audit tbody tr:first-child")
    assert "dave" in first and "unkill" in first and "INC-10: customers waiting" in first, first
    b.shot("break-glass.png")


def _lift_iris(fleet: Fleet) -> None:
    """Lift what a test left killed on iris (break glass: the route's unkill is gated)."""
    for k in fleet.api("GET", "/v1/status", READER)["kills"]:
        if k["route"] == "iris":
            fleet.api("POST", "/v1/unkill?wait=2s", GLASS, body={
                "scope": k["scope"], "route": "iris", **({"version": k["version"]}
                                                         if k["version"] else {}),
                "break_glass": True, "reason": "clean up"})


def test_an_unkill_under_a_wider_kill_says_still_killed(fleet: Fleet, browser: Browser) -> None:
    """Lifting iris/v2's kill while the route's kill stands: the API says `still_killed_by`
    and the CLI says STILL KILLED; the console said only 'generation N: applied', drawn as
    a success, as if v2 served again. Now its receipt says STILL KILLED by route:iris."""
    b = browser
    for scope in ("version", "route"):
        fleet.api("POST", "/v1/kill?wait=2s", KILLER, body={
            "scope": scope, "route": "iris", "version": "v2", "reason": f"INC-11: {scope}"}
            if scope == "version" else {"scope": scope, "route": "iris", "reason": "INC-11"})
    try:
        b.sign_in(fleet.admin, KILLER, "alice")
        b.click("button[data-key='unkill-iris/v2']")
        receipt = _apply(b, "INC-11: v2 fixed", confirm=True)
        assert "STILL KILLED by the route:iris kill in force" in receipt, receipt
        assert "ok" not in (b.d.find_element(By.CSS_SELECTOR, "#action-result p")
                            .get_attribute("class") or "").split()
        b.click("#action-cancel")
        assert [k["scope"] for k in fleet.api("GET", "/v1/status", READER)["kills"]] == ["route"]
    finally:
        _lift_iris(fleet)


def test_asking_for_a_change_another_asked_for_offers_to_approve_it(fleet: Fleet,
                                                                    browser: Browser) -> None:
    """Bob unkills the route alice asked to unkill: the 202 carries `you_may_approve`, yet
    the console said 'Another operator approves it', so he waited while being that other
    operator. It says he may approve it, with the button that opens the approval."""
    fleet.api("POST", "/v1/kill?wait=2s", KILLER,
              body={"scope": "route", "route": "iris", "reason": "INC-12"})
    asked = fleet.api("POST", "/v1/unkill?wait=2s", KILLER,
                      body={"scope": "route", "route": "iris", "reason": "INC-12: fixed"})
    ident = asked["approval"]["id"]
    b = browser
    try:
        b.sign_in(fleet.admin, APPROVER, "bob")
        b.click("button[data-key='unkill-route-iris']")
        said = _apply(b, "INC-12: fixed, I see it too", confirm=True)
        assert said.startswith(f"Already requested by alice: 1 of 2 principal(s) so far "
                               f"(request {ident}") and "you may approve it" in said, said
        assert "Another operator" not in said
        b.click(f"#action-result button[data-key='approve-asked-{ident}']")
        assert "Approve: unkill iris" in b.text("#action-title")
        changes = b.text("#action-changes")
        assert "applied now" in changes
        # the kill it lifts, as the approvals panel's dialog names it (this one named none)
        assert "The kill it lifts" in changes and "route:iris, set by alice" in changes, changes
        assert "“INC-12”" in changes, changes
        receipt = _apply(b, "INC-12: reviewed", confirm=True)
        assert RECEIPT.match(receipt) and "approved by alice, bob" in receipt, receipt
        b.click("#action-cancel")
        assert _route_kills(fleet) == []
    finally:
        _lift_iris(fleet)


def test_the_approval_dialog_names_a_request_whose_kill_was_made_again(
        fleet: Fleet, browser: Browser) -> None:
    """The approval dialog said only 'Approve: unkill iris' and the target's JSON: not
    which request, who asked and why, nor which kill it lifts. An approver reviewing a
    request whose kill was lifted and made again since (its approval is refused: 409
    kill_replaced) now reads that before confirming."""
    fleet.api("POST", "/v1/kill?wait=2s", KILLER,
              body={"scope": "route", "route": "iris", "reason": "INC-13: first"})
    ident = fleet.api("POST", "/v1/unkill?wait=2s", KILLER, body={
        "scope": "route", "route": "iris", "reason": "INC-13: fixed"})["approval"]["id"]
    b = browser
    try:
        _lift_iris(fleet)  # (break glass) then killed again: another kill than the one named
        fleet.api("POST", "/v1/kill?wait=2s", KILLER,
                  body={"scope": "route", "route": "iris", "reason": "INC-13: again"})
        b.sign_in(fleet.admin, APPROVER, "bob")
        item = f"#approvals-body li[data-approval='{ident}']"
        b.wait(lambda d: "1 of 2" in b.text(item), "the request", seen="#approvals")
        b.click(f"button[data-key='approve-{ident}']")
        said = b.text("#action-changes")
        assert f"Request {ident}: unkill route iris (key route:iris), asked by alice: " \
            "“INC-13: fixed”" in said, said
        assert "the kill it named was lifted since" in said and "INC-13: again" in said, said
        assert "409 kill_replaced" in said, said
        b.click("#action-cancel")
    finally:
        fleet.api("POST", f"/v1/approvals/{ident}/decline?wait=2s", KILLER,
                  body={"reason": "clean up"})
        _lift_iris(fleet)


@pytest.mark.timeout(300)
def test_canary_screenshot_for_the_readme(fleet: Fleet, browser: Browser) -> None:
    b = browser
    docs = os.environ.get("KILLGATE_UPDATE_DOCS") == "1"
    if docs:  # a few minutes of history in the charts
        b.wait(lambda d: time.time() - fleet.started > 200, "history", timeout=240)
    b.sign_in(fleet.admin, ADMIN, "carol")
    beta = "article[data-route='iris-beta']"
    b.wait(lambda d: "PASSED" in b.text(beta + " .analysis") and "step 1 of 3" in
           b.text(beta + " .analysis"), "the canary's verdict and step", timeout=40, seen=beta)
    b.wait(lambda d: all("/s" in b.text(_row(v, "iris-beta")) and "\u2013" not in
                         b.text(_row(v, "iris-beta") + " td.num") for v in ("v2", "v3")),
           "both versions' traffic in the table")
    height = b.d.execute_script("return document.documentElement.scrollHeight")
    b.d.set_window_size(1280, min(int(height) + 120, 2400))
    b.wait(lambda d: d.execute_script("return window.innerWidth") == 1280, "the wide window")
    b.shot("console-canary.png")
    if docs:
        shutil.copy(ARTIFACTS / "console-canary.png", ROOT / "docs" / "console.png")


def test_an_event_forged_past_the_anchored_head_shows_broken(fleet: Fleet,
                                                             browser: Browser) -> None:
    """Someone who can write to Redis (no key) appends an event linked to the real head, its
    hash right: the page cannot check MACs, but the event is past the signed head."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    port = str(fleet.redis.port)

    def redis(*args: str) -> str:
        return subprocess.run(["redis-cli", "-p", port, "--raw", *args], capture_output=True,
                              text=True, check=True, timeout=5).stdout

    for _ in range(5):  # (a genuine event written meanwhile breaks the link instead: again)
        b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
        raw = redis("XREVRANGE", "kgui:audit", "+", "-", "COUNT", "1")
        last = json.loads(next(x for x in raw.splitlines() if x.startswith("{")))
        forged = {k: v for k, v in last.items() if k not in ("hash", "mac", "kid")}
        forged.update(id="f" * 32, actor="mallory", action="unkill", prev_hash=last["hash"],
                      reason="forged: approved on the phone")
        forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
        entry = redis("XADD", "kgui:audit", "*", "e", json.dumps(forged)).strip()
        try:
            b.wait(lambda d: "Chain BROKEN" in b.text(".chain"), "the forgery shown as a break")
            shown = b.text(".chain")
            if "past the head" in shown:
                assert "f" * 32 in shown, shown
                b.shot("chain-forged-past-head.png")
                break
            assert "prev_hash" in shown, shown
        finally:
            redis("XDEL", "kgui:audit", entry)
    else:
        pytest.fail("genuine events kept following the forged one")
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified again")


def test_a_forged_event_with_a_long_number_shows_broken(fleet: Fleet, browser: Browser) -> None:
    """The same forgery with a 450-digit number in it (valid JSON; Python writes it back as
    is): the page's JSON reader took at most 400 characters of a number, so the audit answer
    was called 'not the admin API's JSON (a proxy's page?)' and AUDIT CHAIN BROKEN was not
    among the warnings."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    port = str(fleet.redis.port)

    def redis(*args: str) -> str:
        return subprocess.run(["redis-cli", "-p", port, "--raw", *args], capture_output=True,
                              text=True, check=True, timeout=5).stdout

    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    raw = redis("XREVRANGE", "kgui:audit", "+", "-", "COUNT", "1")
    last = json.loads(next(x for x in raw.splitlines() if x.startswith("{")))
    forged = {k: v for k, v in last.items() if k not in ("hash", "mac", "kid")}
    forged.update(id="e" * 32, actor="mallory", prev_hash=last["hash"], n=int("9" * 450))
    forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
    entry = redis("XADD", "kgui:audit", "*", "e", json.dumps(forged)).strip()
    try:
        b.wait(lambda d: "Chain BROKEN" in b.text(".chain"), "the forgery shown as a break",
               seen="#audit")
        b.wait(lambda d: "AUDIT CHAIN BROKEN" in b.text("#warnings"), "the warning")
        assert "not_json" not in b.text("#audit-body")
    finally:
        redis("XDEL", "kgui:audit", entry)

def test_a_forged_event_the_page_cannot_draw_still_shows_broken(fleet: Fleet,
                                                                browser: Browser) -> None:
    """A forged event whose fields are objects JavaScript cannot turn into text
    ({"toString": 0}): drawing the audit table threw, so the round stopped there, the panel
    kept its last picture ("Chain verified", the trail before the forgery) and AUDIT CHAIN
    BROKEN never reached the warnings (found by hostile console review)."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    port = str(fleet.redis.port)

    def redis(*args: str) -> str:
        return subprocess.run(["redis-cli", "-p", port, "--raw", *args], capture_output=True,
                              text=True, check=True, timeout=5).stdout

    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    raw = redis("XREVRANGE", "kgui:audit", "+", "-", "COUNT", "1")
    last = json.loads(next(x for x in raw.splitlines() if x.startswith("{")))
    forged = {k: v for k, v in last.items() if k not in ("hash", "mac", "kid")}
    odd = {"toString": 0, "valueOf": 0}
    forged.update(id="d" * 32, actor=odd, action=odd, reason=odd, time=odd, prev_hash=last["hash"],
                  target={"scope": "route", "route": odd})
    forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
    entry = redis("XADD", "kgui:audit", "*", "e", json.dumps(forged)).strip()
    try:
        b.wait(lambda d: "AUDIT CHAIN BROKEN" in b.text("#warnings"), "the warning",
               seen="#audit")
        b.wait(lambda d: "Chain BROKEN" in b.text(".chain"), "the forgery shown as a break",
               seen="#audit")
        assert "refresh failed" not in b.text("#banner")
        # the forged row itself is drawn, its odd fields as their JSON
        assert '{"toString":0,"valueOf":0}' in b.text("#audit-body"), b.text("#audit-body")
    finally:
        redis("XDEL", "kgui:audit", entry)
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified again")



def test_a_trail_without_a_recorded_head_is_not_called_verified(fleet: Fleet,
                                                                browser: Browser) -> None:
    """Someone who can write to Redis (no key) keeps overwriting the state document with
    garbage and appends a forged event: with no document that verifies, the API names no
    head, and the page must not say the chain and its head were checked."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    port = str(fleet.redis.port)

    def redis(*args: str) -> str:
        return subprocess.run(["redis-cli", "-p", port, "--raw", *args], capture_output=True,
                              text=True, check=True, timeout=5).stdout

    stop = threading.Event()

    def spoil() -> None:
        while not stop.is_set():
            redis("SET", "kgui:state", "not a signed document")
            stop.wait(0.05)

    spoiler = threading.Thread(target=spoil, daemon=True)
    spoiler.start()
    try:
        for n in range(5):  # (a genuine event written meanwhile breaks the link: again)
            b.wait(lambda d: "Chain BROKEN" not in b.text(".chain"), "no break shown")
            b.wait(lambda d: fleet.api("GET", "/v1/audit?limit=1", READER)["head"] is None,
                   "the API names no head")
            raw = redis("XREVRANGE", "kgui:audit", "+", "-", "COUNT", "1")
            last = json.loads(next(x for x in raw.splitlines() if x.startswith("{")))
            forged = {k: v for k, v in last.items() if k not in ("hash", "mac", "kid")}
            forged.update(id=f"{n}" * 32, actor="mallory", action="unkill",
                          prev_hash=last["hash"], reason=f"forged {n}: no signed document")
            forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
            entry = redis("XADD", "kgui:audit", "*", "e", json.dumps(forged)).strip()
            b.wait(lambda d, n=n: f"forged {n}: no signed document" in b.text("#audit-body"),
                   "the forged event shown")
            shown = b.text(".chain")
            if "BROKEN" not in shown:
                assert "Chain verified" not in shown, shown
                assert "NOT anchored" in shown, shown
                b.shot("chain-not-anchored.png")
                break
            redis("XDEL", "kgui:audit", entry)
        else:
            pytest.fail("genuine events kept following the forged one")
    finally:
        stop.set()
        spoiler.join(5)
    redis("XDEL", "kgui:audit", entry)
    # a write through the API repairs the store at once
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    fleet.api("POST", "/v1/kill", KILLER, body={**sel, "reason": "repair the store"})
    fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "repair the store"})
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified again")


def test_refused_store_values_show_in_the_fleet_panel(fleet: Fleet, browser: Browser) -> None:
    """(console and auth review) someone writing forged values to Redis was invisible on
    the page: each instance refuses them and counts them in /v1/status, and the fleet
    panel said nothing."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    b.wait(lambda d: b.text("[data-testid=fleet-live]").startswith("2 live"), "two instances")
    subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "SET", "kgui:state",
                    "not a signed document"], capture_output=True, check=True, timeout=5)
    subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "PUBLISH", "kgui:events",
                    "not a signed document either"], capture_output=True, check=True,
                   timeout=5)
    b.wait(lambda d: "store value(s) refused" in b.text("#fleet-body"), "the refusals shown")
    # a write through the API repairs the store at once (the instances' own re-seed may be
    # backing off after an earlier test's repeated forgeries)
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    fleet.api("POST", "/v1/kill", KILLER, body={**sel, "reason": "repair the store"})
    fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "repair the store"})
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified again")


def test_a_kill_the_config_no_longer_routes_shows_not_routed(fleet: Fleet,
                                                              browser: Browser) -> None:
    """A config that renames a killed version takes it out of routing (README "Trust"):
    the page says the kill stops nothing until the name comes back."""
    b = browser
    cfg = fleet.gateways[0].config  # the instance the page reads
    original = cfg.read_text()
    (line,) = [x for x in original.splitlines() if "name: v2," in x and "weight: 10}" in x]
    sel = {"scope": "version", "route": "iris", "version": "v2"}

    def routed() -> list[bool]:
        return [k["routed"] for k in fleet.api("GET", "/v1/status", READER)["kills"]]

    fleet.api("POST", "/v1/kill", KILLER, body={**sel, "reason": "INC-12"})
    try:
        atomic_write(cfg, original.replace(line, line.replace("name: v2,", "name: v2b,")))
        b.sign_in(fleet.admin, READER, "bob")
        b.wait(lambda d: "NOT ROUTED" in b.text("#kills-body"), "the kill shown not routed")
        assert "stops nothing" in b.text("#kills-body")
    finally:
        atomic_write(cfg, original)
        wait_until_sync(lambda: routed() == [True], 15, 0.05, "the name back")
        fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "INC-12 over"})
    b.wait(lambda d: "NOT ROUTED" not in b.text("#kills-body"), "the badge gone")


def test_a_tampered_audit_trail_shows_broken(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    ids = subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "--raw", "XRANGE",
                          "kgui:audit", "-", "+"], capture_output=True, text=True,
                         check=True, timeout=5).stdout
    entry_ids = [x for x in ids.split() if re.fullmatch(r"\d+-\d+", x)]
    assert len(entry_ids) >= 3
    subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "XDEL", "kgui:audit",
                    entry_ids[-2]], check=True, capture_output=True, timeout=5)
    b.wait(lambda d: "Chain BROKEN" in b.text(".chain"), "the break shown")
    assert "prev_hash" in b.text(".chain")
    b.shot("chain-broken.png")


def test_the_pages_hash_and_canonical_json_match_pythons(fleet: Fleet, browser: Browser) -> None:
    """The audit check runs in the browser: its canonical JSON and its SHA-256 (the fallback
    for pages not served from a secure context) must agree with Python's byte for byte."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    event = {"id": "e1", "reason": "quote \" backslash \\ tab \t nul \x00 del \x7f é ✓ 𝄞 \u2028",
             "after": {"weights": {"v1": 100.0, "v2": 0.0, "v3": 33.333333333333336},
                       "tiny": 1e-05, "huge": 1e16, "neg": -2.5, "n": 7, "ok": True, "none": None},
             "zeta": [], "alpha": {}, "Z": "upper before lower"}
    lengths = [0, 1, 55, 56, 63, 64, 65, 119, 1000]
    got = b.d.execute_async_script("""
        const [text, lengths, done] = arguments;
        Promise.all([import('/ui/js/json.js'), import('/ui/js/sha256.js')]).then(([j, h]) => {
          const canon = j.canonical(j.parse(text, true));
          done({canon, hash: h.sha256Sync(canon),
                sizes: lengths.map((n) => h.sha256Sync('a'.repeat(n))),
                plain: j.parse('{"x": NaN, "y": -Infinity, "z": [1.5e3]}').z[0]});
        });""", json.dumps(event), lengths)
    want = canonical(event)
    assert got["canon"].encode() == want
    assert got["hash"] == hashlib.sha256(want).hexdigest()
    assert got["sizes"] == [hashlib.sha256(b"a" * n).hexdigest() for n in lengths]
    assert got["plain"] == 1500


def test_a_time_more_than_a_day_away_says_its_zone(fleet: Fleet, browser: Browser) -> None:
    """A kill, an override or an audit event older than a day is shown as a time: it was UTC
    without saying so, beside the banner's local "Updated" time (found by review: at 3 a.m.
    in UTC-5, a kill 'at 2026-12-01 10:00' read as five hours off)."""
    b = browser
    b.d.get(fleet.admin + "/ui/")
    got = b.d.execute_async_script("""
        const done = arguments[0];
        import('/ui/js/dom.js').then((m) => done([m.fmtAgo('2026-01-02T03:04:05+01:00'),
                                                  m.fmtAgo(new Date(Date.now() - 90e3).toISOString())]));""")
    assert got == ["2026-01-02 02:04 UTC", "2 min ago"]


def test_a_thousand_routes_do_not_freeze_the_tab(fleet: Fleet, browser: Browser) -> None:
    """The routes panel is redrawn every 3 s: with 1000 routes (here the real iris card,
    1000 times) laying the page out took 2.3 s of every 3 (found by review: the tab froze);
    cards off screen are now skipped by layout (content-visibility)."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    got = b.d.execute_async_script("""
        const done = arguments[0];
        Promise.all([import('/ui/js/api.js'), import('/ui/js/routes.js'), import('/ui/js/dom.js')])
          .then(async ([api, routes, dom]) => {
            const sd = (await api.call('GET', '/v1/status')).data;
            const tr = (await api.call('GET', '/v1/traffic')).data;
            const names = Array.from({length: 1000}, (_, i) => `r${i}`);
            const traffic = {...tr, routes: Object.fromEntries(names.map((n) => [n, tr.routes.iris]))};
            const el = document.getElementById('routes-body');
            dom.render(el, names.map((n) => routes.routeCard(n, sd.routes.iris, traffic,
                                                            {kill: true, rollout: true}, () => {}, [])));
            const t0 = performance.now();
            void document.body.offsetHeight; // (the layout the browser does before painting)
            done([performance.now() - t0, el.querySelectorAll('article.route').length]);
          });""")
    layout_ms, cards = got
    assert cards == 1000
    assert layout_ms < 500, f"laying out 1000 route cards took {layout_ms:.0f} ms"


def test_nothing_from_elsewhere_no_csp_violation_no_token_in_a_url(fleet: Fleet,
                                                                  browser: Browser) -> None:
    b = browser
    b.drain()
    assert b.requests, "the performance log recorded no request"
    origin = fleet.admin + "/"
    # what the console's pages asked for (the browser's own start page is not ours)
    ours = [u for doc, u in b.requests if doc.startswith(origin) or u.startswith(origin)]
    outside = [u for u in ours if not u.startswith(origin)]
    assert not outside, outside
    assert any(u.endswith("/ui/js/main.js") for u in ours)
    assert any("/v1/status?fields=index" in u for u in ours)  # (the page's own status reads)
    for tok in (KILLER, READER, ADMIN):
        assert not [u for _, u in b.requests if tok in u or tok[-20:] in u]
    assert not [e for e in b.console if "Content Security Policy" in e["message"]
                or "Trusted Type" in e["message"]], b.console
    # apart from the forced 403 of the read-only test, the refused weights (400), the
    # break-glass without a reason (400) and the unkill of a kill made again meanwhile
    # (409), the console stayed clean (it offers no self-approval to be refused)
    expected = (("/v1/kill", "403"), ("/v1/routes/iris/weights", "400"),
                ("/v1/unkill", "400"), ("/v1/unkill", "409"))
    severe = [e for e in b.console if e["level"] == "SEVERE"
              and not any(p in e["message"] and c in e["message"] for p, c in expected)]
    assert not severe, severe
    assert b.d.get_cookies() == []
    assert b.d.execute_script("return localStorage.length") == 0
    assert b.d.execute_script("return sessionStorage.getItem('killgate.token')") == READER


def test_a_trimmed_trail_verifies_in_the_browser_and_a_deletion_past_it_does_not(
        fleet: Fleet, browser: Browser) -> None:
    """The console's chain check (audit.js) accepts a trail that starts where the newest
    retention checkpoint says, and reports one with events deleted past it (synthetic
    trails, sealed as the gateway seals them: tests/test_retention.py)."""
    from gateway.domain.retention import Retention
    from tests.test_retention import _trail, _trimmed

    b = browser
    b.d.get(fleet.admin + "/ui/")
    _, kept = _trimmed(_trail(130), Retention(max_events=110))
    newest_first = json.dumps(list(reversed(kept)))
    got = b.d.execute_async_script("""
      const [text, head, done] = arguments;
      Promise.all([import('/ui/js/audit.js'), import('/ui/js/json.js')]).then(async ([a, j]) => {
        const events = j.parse(text, true);
        const out = [];
        for (const evs of [events, events.slice(0, -3)]) {
          const r = await a.verifyChain(evs, head);
          out.push([r.ok, r.reachesStart, r.trimmed ? Number(r.trimmed.after.removed) : null]);
        }
        done(out);
      }).catch((e) => done(String(e)));
    """, newest_first, kept[-1]["hash"])
    assert got == [[True, True, 20], [True, False, None]], got


async def test_verify_all_reads_again_while_a_look_trims_batch_after_batch(
        tmp_path: Path, backends, browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    """(hostile review of retention) The console's "verify the whole trail" read the trail
    again once when it read as broken; a look trims batch after batch on a long trail, so
    it said BROKEN then: a tamper alarm for nothing. It reads again while the head moves
    (here: a trim lands between the pages of each of its first three reads), as `killgate
    audit verify` does. An in-process gateway (its store's pages are where trims land)."""
    from tests.test_retention_faults import trimmed_between_pages

    async with trimmed_between_pages(tmp_path, backends, monkeypatch) as (g, trims):
        b = browser
        await asyncio.to_thread(b.d.get, g.admin + "/ui/")
        got = await asyncio.to_thread(b.d.execute_async_script, """
          const [tok, done] = [arguments[0], arguments[arguments.length - 1]];
          Promise.all([import('/ui/js/api.js'), import('/ui/js/audit.js')]).then(
            async ([api, a]) => {
              api.setToken(tok);
              const r = await a.verifyAll();
              done([r.ok, r.trimmed ? Number(r.trimmed.after.removed) : null, r.problem || ""]);
            }).catch((e) => done(String(e)));""", token("erin", "killgate:read"))
        assert trims == [0]
        assert got == [True, 1, ""], got


def test_the_console_works_behind_a_path_prefix_proxy(fleet: Fleet, browser: Browser,
                                                      tmp_path: Path) -> None:
    """A proxy that publishes the admin listener under /kg/ (the site's root is another
    application's): the page's API calls go to /kg/v1/..., not to the root's /v1/...
    (found by review: every call was an absolute path, so behind a prefix the page signed
    nobody in and drew nothing); /kg/ui (no slash) leads to /kg/ui/."""
    b = browser
    port = fleet.gateways[1].admin_port
    prefix = f"""
        location /kg/ {{
            proxy_pass http://127.0.0.1:{port}/;
            proxy_http_version 1.1;
            proxy_set_header Authorization "Bearer {KILLER}";
        }}
        location /v1/ {{ return 404 "another application"; }}
        location = /openapi.json {{ return 404 "another application"; }}
        location /ui {{ return 404 "another application"; }}
    """
    proc, url = nginx_proxy(tmp_path, port, KILLER, prefix)
    try:
        b.d.get(url + "/kg/ui")
        b.wait(lambda d: b.text("[data-testid=subject]") == "alice", "signed in behind /kg/",
               seen="body")
        assert b.d.current_url == url + "/kg/ui/"
        b.wait(lambda d: "serving" in b.text(_row("v2")), "the routes behind /kg/")
        b.wait(lambda d: "live instance" in b.text("[data-testid=fleet-live]"), "the fleet")
        b.drain()
        asked = [u for _, u in b.requests if u.startswith(url) and "/v1/" in u]
        assert asked and all(u.startswith(url + "/kg/v1/") for u in asked), asked[-5:]
    finally:
        b.d.get(fleet.admin + "/ui/")  # leave the proxy's origin before it goes
        proc.terminate()
        proc.wait(10)


async def test_verify_all_says_a_deleted_reseed_record_is_no_flush(
        tmp_path: Path, backends, browser: Browser, redis_server, session) -> None:
    """(found by review revsync) The re-seed's own record deleted after a loss: the console's
    "verify the whole trail" said "the events before it were lost (a flushed or truncated
    store, `audit_trail_lost`)", the words of the loss the fleet reported, though after a
    flush the trail starts at the re-seed; it now says events were deleted from the
    trail's start, as `killgate audit verify` does. An in-process gateway, real redis."""
    from tests.backends import echo_app
    from tests.conftest import running_gateway, two_versions, wait_until, write_config
    from tests.test_keyed_audit import actions, events_in, rewrite
    from tests.test_killswitch import redis_state

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 1)
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: redis_server.cmd("EXISTS", "kgtest:state") == "1", 10,
                         what="the re-seed")
        await actions(session, g.admin, 1)
        genuine = events_in(redis_server)
        assert genuine[0]["action"] == "state.reseed", genuine
        b = browser
        await asyncio.to_thread(b.d.get, g.admin + "/ui/")

        async def verify_all() -> list[object]:
            return list(await asyncio.to_thread(b.d.execute_async_script, """
              const [tok, done] = [arguments[0], arguments[arguments.length - 1]];
              Promise.all([import('/ui/js/api.js'), import('/ui/js/audit.js')]).then(
                async ([api, a]) => {
                  api.setToken(tok);
                  const r = await a.verifyAll();
                  done([r.ok, r.problem || ""]);
                }).catch((e) => done([null, String(e)]));""", token("erin", "killgate:read")))

        ok, said = await verify_all()
        assert ok is False and "were lost (a flushed or truncated store" in said, said
        rewrite(redis_server, genuine[1:])  # the re-seed's record deleted
        ok, said = await verify_all()
        assert ok is False and "flushed" not in said, said
        assert "no re-seed" in said and "deleted from the trail's start" in said, said
