"""The console must not look green while `killgate status` warns (console review 2): a
latched route that serves nothing on this instance, a reload that failed, and the other
lines of the CLI's warnings, in a real Chromium against a real fleet."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.conftest import admin_token, wait_until_sync
from tests.console_rig import Browser, Fleet, behind_proxy, nginx_proxy, running_fleet
from tests.test_reload import atomic_write

pytestmark = pytest.mark.timeout(120)

READER = admin_token("killgate:read", "bob", 10800)
ADMIN = admin_token("killgate:admin", "carol", 10800)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # (max_staleness 2 s, not 5: test_no_kill_is_not_called_green_while_the_state_is_stale
    # waits it out; still 20 polls (100 ms) without an answer before the state is stale)
    with running_fleet(tmp_path_factory.mktemp("console-warn"),
                       state_lines="  max_staleness: 2s\n") as fl:
        yield fl


@pytest.fixture(scope="module", autouse=True)
def _quick_rounds(browser: Browser) -> None:
    """What the tests wait for is drawn by the page's next refresh round: every 1 s here,
    not 3 (tests/console_rig.py `Browser.quick_rounds`; no test here is about the period)."""
    browser.quick_rounds()


def _iris(fleet: Fleet) -> dict[str, object]:
    doc = fleet.api("GET", "/v1/status", READER)
    return doc["routes"]["iris"]  # type: ignore[no-any-return]


def test_a_latched_route_serving_nothing_is_not_shown_serving(fleet: Fleet,
                                                              browser: Browser) -> None:
    """v2 promoted through the other instance (its file has v2) while this one's file no
    longer has it: this instance answers iris with 503 (no fallback), `killgate status`
    says NOT SERVING; the page showed v1 'serving' with the latch as its only mark."""
    b = browser
    cfg = fleet.gateways[0].config  # the instance the page reads
    original = cfg.read_text()
    (line,) = [x for x in original.splitlines() if "name: v2," in x and "weight: 10}" in x]
    # (and a field of the route's own: a reload that changed only its versions is taken
    # back once a promotion made elsewhere needs one it dropped, control/reloadback.py)
    atomic_write(cfg, original.replace(line, line.replace("name: v2,", "name: v2b,"))
                 .replace("allow_pin: true", "allow_pin: false", 1))
    try:
        wait_until_sync(lambda: "v2b" in _iris(fleet)["versions"], 15, 0.05, "v2 renamed")
        fleet.api("POST", "/v1/routes/iris/promote", ADMIN, gw=1,
                  body={"version": "v2", "reason": "t"})
        wait_until_sync(lambda: _iris(fleet).get("override_unservable") == ["v2"], 15, 0.05,
                        "the override unservable")
        b.sign_in(fleet.admin, READER, "bob")
        card = "article[data-route='iris']"
        b.wait(lambda d: "NOT SERVING" in b.text(card), "the route shown not serving")
        assert "killgate release iris" in b.text(card)
        assert "NOT SERVING" in b.text("#warnings")
        assert "serving" not in b.text(card + " td[data-testid=state]").replace(
            "NOT SERVING", "")
    finally:
        fleet.api("POST", "/v1/routes/iris/release", ADMIN, gw=1, body={"reason": "t over"})
        atomic_write(cfg, original)
        wait_until_sync(lambda: "v2" in _iris(fleet)["versions"], 15, 0.05, "v2 back")
    b.wait(lambda d: "NOT SERVING" not in b.text("#main"), "the warning gone")


def test_a_failed_reload_shows_on_the_page(fleet: Fleet, browser: Browser) -> None:
    """`killgate status` says LAST RELOAD FAILED: the file on disk is not what runs."""
    b = browser
    cfg = fleet.gateways[0].config
    original = cfg.read_text()
    b.sign_in(fleet.admin, READER, "bob")
    try:
        atomic_write(cfg, original.replace("stable: v1", "stable: v9"))
        wait_until_sync(lambda: fleet.api("GET", "/v1/status", READER)["config"]["last_error"],
                        15, 0.05, "the reload refused")
        b.wait(lambda d: "LAST RELOAD FAILED" in b.text("#warnings"), "the failure shown")
        assert "routes[0].stable" in b.text("#warnings")
    finally:
        atomic_write(cfg, original)
        wait_until_sync(lambda: not fleet.api("GET", "/v1/status", READER)["config"]
                        ["last_error"], 15, 0.05, "the file loaded again")
    b.wait(lambda d: "LAST RELOAD FAILED" not in b.text("#main"), "the warning gone")


KILLER = admin_token("killgate:read killgate:kill", "alice", 10800)


def test_a_receipt_names_the_silent_instance_it_did_not_count(fleet: Fleet,
                                                              browser: Browser) -> None:
    """An instance that stopped heartbeating (crashed, or cut off from the store) is not
    in a receipt's count: `killgate kill` warns of it; the page's dialog showed 'applied
    by 1/1' in green, as if the whole fleet enforced the kill."""
    b = browser
    other = fleet.gateways[1]
    name = next(r["instance"] for r in fleet.api("GET", "/v1/fleet", READER)["instances"]
                if not r["self"])
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    # (signed in and the dialog filled first: a silent instance is listed for 12 leases,
    # 24 s here (console.LOST_AFTER), then dropped from the fleet, and on a loaded CI
    # machine (load 23) the browser's steps after the stop took past that: "1/1", no
    # NOT COUNTED, as the fleet no longer knew of it)
    b.sign_in(fleet.admin, KILLER, "alice")
    b.click("button[data-key='kill-iris/v2']")
    b.d.find_element(By.ID, "action-reason").send_keys("INC-7")
    os.kill(other.proc.pid, signal.SIGSTOP)
    try:
        wait_until_sync(lambda: any(r["instance"] == name and not r["live"] for r in
                                    fleet.api("GET", "/v1/fleet", READER)["instances"]),
                        15, 0.05, "the other instance silent")
        b.wait(lambda d: "SILENT" in b.text("#warnings"), "the silent instance warned of")
        assert name in b.text("#warnings")
        b.click("#action-apply")
        receipt = str(b.wait(lambda d: b.text("#action-result [data-testid]"), "the receipt"))
        assert receipt.startswith("generation"), receipt
        assert "NOT COUNTED" in receipt and name in receipt, receipt
        assert "ok" not in (b.d.find_element(By.CSS_SELECTOR, "#action-result p")
                            .get_attribute("class") or "").split()
        b.click("#action-cancel")
    finally:
        os.kill(other.proc.pid, signal.SIGCONT)
        fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "INC-7 over"})
    b.wait(lambda d: "SILENT" not in b.text("#main"), "the instance back", timeout=30)


def test_an_admin_listener_that_stops_answering_is_said_within_seconds(
        fleet: Fleet, browser: Browser) -> None:
    """A hung admin listener (a stopped process, a black-holed network path) left every
    read of the page waiting forever: the refresh never came back, and the last picture
    (green, 'Updated …') stayed on screen as if current."""
    b = browser
    me = fleet.gateways[0]
    # (a read gives up after 3 s here, not api.js's 8: what is proved is that it gives up
    # and says so, not the deadline's length; 8 s of a stopped listener were most of this
    # test's time)
    b.quick_rounds(read_ms=3000)
    try:
        b.sign_in(fleet.admin, READER, "bob")
        b.wait(lambda d: "Updated" in b.text("#banner"), "a round drawn")
        os.kill(me.proc.pid, signal.SIGSTOP)
        try:
            b.wait(lambda d: "did not answer" in b.text("#kills-body"), "the hang said",
                   timeout=30)
            assert "No kill in force" not in b.text("#kills-body")
            assert "failed" in b.text("#banner")
        finally:
            os.kill(me.proc.pid, signal.SIGCONT)
        b.wait(lambda d: "Updated" in b.text("#banner"), "the page back", timeout=30)
        assert b.d.execute_script("return window.__kgQuickRounds") > 0
    finally:
        b.quick_rounds()  # (the module's, from the next page load on)


def test_a_write_in_flight_keeps_its_dialog_until_its_receipt(fleet: Fleet,
                                                              browser: Browser) -> None:
    """A slow write's dialog could be closed (Cancel, Escape) while the request was in
    flight: the kill then happened with no receipt seen, and its receipt landed in the
    next dialog opened (an unkill's, say), as if that one had been applied."""
    b = browser
    me = fleet.gateways[0]
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    b.sign_in(fleet.admin, KILLER, "alice")
    b.click("button[data-key='kill-iris/v2']")
    b.d.find_element(By.ID, "action-reason").send_keys("INC-9")
    os.kill(me.proc.pid, signal.SIGSTOP)
    try:
        b.click("#action-apply")
        b.wait(lambda d: "Applying" in b.text("#action-result"), "the write under way")
        is_open = "return document.getElementById('action-dialog').open"
        b.d.find_element(By.ID, "action-cancel").click()
        assert b.d.execute_script(is_open), "closed by Cancel with the write in flight"
        ActionChains(b.d).send_keys(Keys.ESCAPE).perform()
        assert b.d.execute_script(is_open), "closed by Escape with the write in flight"
        # again: Chromium skips the cancel event of an Escape with no user activation since
        # the last one it let be refused (close watchers), and closes the dialog outright
        ActionChains(b.d).send_keys(Keys.ESCAPE).perform()
        assert b.d.execute_script(is_open), "closed by a second Escape with the write in flight"
    finally:
        os.kill(me.proc.pid, signal.SIGCONT)
    try:
        receipt = str(b.wait(lambda d: b.text("#action-result [data-testid]"), "the receipt"))
        assert receipt.startswith("generation"), receipt
        assert b.text("#action-title") == "Kill version iris/v2"
        b.click("#action-cancel")
    finally:
        fleet.api("POST", "/v1/unkill", KILLER, body={**sel, "reason": "INC-9 over"})


def test_an_answer_that_is_not_json_is_said_not_taken_for_the_state(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """A proxy in front of the admin listener answering 200 with its own page (a sign-in
    page once its session ended, say) broke the round with a TypeError: the kill switch
    panel kept its last picture (or nothing) and the banner spoke of JavaScript."""
    b = browser
    page = 'location = /v1/status { default_type text/html; return 200 "<html>Sign in</html>"; }'
    with behind_proxy(b, fleet, tmp_path, READER, page) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "bob", "signed in by the proxy")
        b.wait(lambda d: "not the admin API's JSON" in b.text("#kills-body"), "the garbage said")
        assert "Sign in" in b.text("#kills-body")
        assert "not the admin API's JSON" in b.text("#routes-body")
        assert "live instance" in b.text("#fleet-body")  # what did answer is drawn
        assert "TypeError" not in b.text("#main")


def test_warnings_that_cannot_be_read_are_not_shown_as_none(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """GET /v1/status failing (a proxy's 502): the warnings, all drawn from it, vanished as
    if there were none: STALE or FAIL-CLOSED shown a round before just went (found by
    hostile console review)."""
    b = browser
    bad = "location = /v1/status { return 502; }"
    with behind_proxy(b, fleet, tmp_path, READER, bad) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "bob", "signed in by the proxy")
        b.wait(lambda d: "502" in b.text("#kills-body"), "the failure in the kill panel")
        b.wait(lambda d: "STATE NOT READ" in b.text("#warnings"), "the warnings said unknown",
               timeout=5)


def test_a_feature_list_that_did_not_load_is_said_not_taken_for_none(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """GET /openapi.json failing once at sign-in (a proxy's 502, a slow listener) hid the
    approvals panel for the whole session, as if the gateway had no approvals: a request
    waiting for a second person went unseen."""
    b = browser
    bad = "location = /openapi.json { return 502; }"
    with behind_proxy(b, fleet, tmp_path, READER, bad) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "bob", "signed in by the proxy")
        b.wait(lambda d: "feature list did not load" in b.text("#approvals"), "the gap said")
        assert "502" in b.text("#approvals") and "killgate approvals" in b.text("#approvals")


def test_a_redirect_is_not_called_an_unreachable_listener(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """An OIDC proxy whose session ended redirects every call to its sign-in: the page
    said 'the admin listener did not answer', sending the operator after a gateway that
    was up."""
    b = browser
    idp = "location = /v1/status { return 302 http://127.0.0.1:9/sign-in; }"
    with behind_proxy(b, fleet, tmp_path, READER, idp) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "bob", "signed in by the proxy")
        b.wait(lambda d: "redirect" in b.text("#kills-body"), "the redirect said")
        assert "did not answer" not in b.text("#kills-body")
        assert "reload the page" in b.text("#kills-body")


def test_no_kill_is_not_called_green_while_the_state_is_stale(fleet: Fleet,
                                                              browser: Browser) -> None:
    """The store silent beyond max_staleness: kills made meanwhile may not be in force
    here, as `killgate status` says (STALE); the kill switch panel still said 'No kill
    in force' with a green tick."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    b.wait(lambda d: "No kill in force" in b.text("#kills-body"), "no kill")
    os.kill(fleet.redis.proc.pid, signal.SIGSTOP)
    try:
        b.wait(lambda d: "STALE" in b.text("#warnings"), "the staleness warned of", timeout=40)
        b.wait(lambda d: "No kill in force" not in b.text("#kills-body"), "no green 'no kill'",
               timeout=10)
        assert "not current" in b.text("#kills-body")
    finally:
        os.kill(fleet.redis.proc.pid, signal.SIGCONT)
    b.wait(lambda d: "No kill in force" in b.text("#kills-body"), "current again", timeout=40)


def test_a_reload_while_the_api_is_down_keeps_the_token(fleet: Fleet, browser: Browser,
                                                        tmp_path: Path) -> None:
    """Reloading the page while the admin API answered 502 (a restart behind a proxy)
    threw the tab's token away: at 3 a.m. the operator had to find it again. Only a 401
    (the token refused) removes it; otherwise the page says so and tries again."""
    b = browser
    down = "location = /v1/whoami { return 502; }"
    with behind_proxy(b, fleet, tmp_path, READER, down, clear=True) as url:
        b.d.get(url + "/ui/")
        b.d.execute_script("sessionStorage.setItem('killgate.token', arguments[0])", READER)
        b.d.refresh()
        b.wait(lambda d: "502" in b.text("#signin-error"), "the failure said", seen="body")
        kept = b.d.execute_script("return sessionStorage.getItem('killgate.token')") == READER
        assert kept, "the token was removed from the tab"
        assert "trying again" in b.text("#signin-error")


def test_set_weights_does_not_prefill_a_killed_version_with_zero(fleet: Fleet,
                                                                 browser: Browser) -> None:
    """The weights dialog was filled with the effective shares: a killed (or ejected)
    version read 0, and applying the dialog as shown latched it at weight 0, so it got no
    traffic after its kill was lifted."""
    b = browser
    admin = admin_token("killgate:admin", "carol", 10800)
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    fleet.api("POST", "/v1/kill", admin, body={**sel, "reason": "INC-3"})
    try:
        b.sign_in(fleet.admin, admin, "carol")
        b.wait(lambda d: "KILLED" in b.text("article[data-route='iris'] tr[data-version='v2'] "
                                            "td[data-testid=state]"), "v2 killed")
        b.click("button[data-key='weights-iris']")
        got = b.d.find_element(By.ID, "f-w-v2").get_attribute("value")
        assert got == "10", got
        b.click("#action-cancel")
    finally:
        fleet.api("POST", "/v1/unkill", admin, body={**sel, "reason": "INC-3 over"})


def test_a_broken_audit_chain_is_among_the_warnings(fleet: Fleet, browser: Browser) -> None:
    """(the trail stays broken: no later test here reads it) The chain the page checks was said
    broken only in the audit panel, below every route: at the top, nothing."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    out = subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "--raw", "XRANGE",
                          "kgui:audit", "-", "+"], capture_output=True, text=True,
                         check=True, timeout=5).stdout
    ids = [x for x in out.split() if re.fullmatch(r"\d+-\d+", x)]
    assert len(ids) >= 3
    subprocess.run(["redis-cli", "-p", str(fleet.redis.port), "XDEL", "kgui:audit", ids[-2]],
                   check=True, capture_output=True, timeout=5)
    b.wait(lambda d: "Chain BROKEN" in b.text(".chain"), "the break in the audit panel")
    b.wait(lambda d: "AUDIT CHAIN BROKEN" in b.text("#warnings"), "the break among the warnings")
    assert "killgate audit verify" in b.text("#warnings")


def test_a_token_refused_by_a_later_read_leaves_the_tab(fleet: Fleet, browser: Browser,
                                                        tmp_path: Path) -> None:
    """A 401 met by the approvals read (the token expired between a round's calls) signed
    the page out but left the refused token in the tab's storage."""
    b = browser
    gone = ('location = /v1/approvals { default_type application/json; return 401 '
            '\'{"error": {"type": "unauthorized", "message": "token expired"}}\'; }')
    with behind_proxy(b, fleet, tmp_path, READER, gone, clear=True) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.d.execute_script("return document.readyState") == "complete",
               "the page", seen="body")
        b.d.execute_script("sessionStorage.setItem('killgate.token', arguments[0])", READER)
        b.d.refresh()
        b.wait(lambda d: "no longer accepted" in b.text("#signin-error"), "signed out",
               seen="body")
        cleared = b.d.execute_script("return sessionStorage.getItem('killgate.token') === null")
        assert cleared, "the refused token was left in the tab"



def test_focus_stays_on_its_button_when_names_run_together(fleet: Fleet,
                                                            browser: Browser) -> None:
    """Route iris with a version beta-v2 and route iris-beta with a version v2: both Kill
    buttons were keyed 'kill-iris-beta-v2', so the refresh (every 3 s) put the keyboard
    focus on iris's button when it was on iris-beta's: Enter then opened the kill of the
    other route's version. The keys join route and version with '/', which no name has."""
    b = browser
    cfg = fleet.gateways[0].config  # the instance the page reads
    original = cfg.read_text()
    (line,) = [x for x in original.splitlines() if "name: v2," in x and "weight: 10}" in x]
    atomic_write(cfg, original.replace(line, line.replace("name: v2,", "name: beta-v2,")))
    try:
        wait_until_sync(lambda: "beta-v2" in _iris(fleet)["versions"], 15, 0.05, "the rename")
        b.sign_in(fleet.admin, ADMIN, "carol")
        b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "article[data-route='iris'] "
                                         "tr[data-version='beta-v2'] button.danger"), "beta-v2")
        # the later of the two in the page (the first with a key is where focus went)
        want = b.d.execute_script("""
            const q = (r, v) => document.querySelector(
              `article[data-route='${r}'] tr[data-version='${v}'] button.danger`);
            const [x, y] = [q('iris', 'beta-v2'), q('iris-beta', 'v2')];
            window.__f = x.compareDocumentPosition(y) & Node.DOCUMENT_POSITION_FOLLOWING ? y : x;
            window.__f.focus();
            return [window.__f.closest('article').dataset.route,
                    window.__f.closest('tr').dataset.version, window.__f.textContent];""")
        where = "const a = document.activeElement; return [a !== window.__f, " \
                "a.closest('article') && a.closest('article').dataset.route, " \
                "a.closest('tr') && a.closest('tr').dataset.version, a.textContent]"
        got = b.wait(lambda d: (r := d.execute_script(where))[0] and r, "a refresh round")
        assert got[1:] == want, (got, want)
    finally:
        atomic_write(cfg, original)
        wait_until_sync(lambda: "v2" in _iris(fleet)["versions"], 15, 0.05, "v2 back")


def test_a_receipt_says_when_silent_instances_could_not_be_asked_for(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """After a write the dialog asks GET /v1/fleet for instances a receipt does not count;
    when that read failed (a proxy's 502, a timeout) the receipt was drawn green, 'applied
    by 2/2', as if none were silent. It says the check could not be made, as a warning."""
    killer = admin_token("killgate:read killgate:kill", "alice", 10800)
    down = 'location = /v1/fleet { return 502; }'
    proc, url = nginx_proxy(tmp_path, fleet.gateways[0].admin_port, killer, down)
    sel = {"scope": "version", "route": "iris", "version": "v2"}
    b = browser
    try:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "alice", "signed in by the proxy")
        b.click("button[data-key='kill-iris/v2']")
        b.d.find_element(By.ID, "action-reason").send_keys("INC-13")
        b.click("#action-apply")
        receipt = str(b.wait(lambda d: b.text("#action-result [data-testid]"), "the receipt"))
        assert receipt.startswith("generation") and "could not be asked for (GET /v1/fleet: " \
            "502" in receipt, receipt
        assert "ok" not in (b.d.find_element(By.CSS_SELECTOR, "#action-result p")
                            .get_attribute("class") or "").split()
        b.click("#action-cancel")
    finally:
        b.d.get(fleet.admin + "/ui/")
        proc.terminate()
        proc.wait(10)
        fleet.api("POST", "/v1/unkill", killer,
                  body={**sel, "reason": "INC-13 over"})


def test_a_long_route_name_does_not_push_the_page_sideways(fleet: Fleet,
                                                            browser: Browser) -> None:
    """A route named as many are (llm_chat_completions_production_eu_west_1: no hyphen to
    break at) did not wrap in its card's heading: on a phone the page scrolled sideways."""
    b = browser
    cfg = fleet.gateways[0].config  # the instance the page reads
    original = cfg.read_text()
    name = "llm_chat_completions_production_eu_west_1"
    atomic_write(cfg, original.replace("name: iris-beta", f"name: {name}"))
    try:
        wait_until_sync(lambda: name in fleet.api("GET", "/v1/status", READER)["routes"], 15,
                        0.05, "the rename")
        b.sign_in(fleet.admin, READER, "bob")
        b.d.set_window_size(420, 900)
        b.wait(lambda d: d.execute_script("return window.innerWidth") <= 420, "a narrow window")
        b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, f"article[data-route='{name}']"),
               "the route")
        over = b.d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        wide = b.d.execute_script(
            "return [...document.querySelectorAll('#main *')].filter((e) => "
            "e.getBoundingClientRect().right > window.innerWidth + 0.5 && !e.closest('.scroll'))"
            ".map((e) => e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 60))"
            ".slice(0, 5)")
        assert over <= 0, f"the page scrolls {over} px sideways: {wide}"
        # a sentence-long badge (the store's "value(s) refused" warning, shown only after
        # a forgery: it overflowed in a CI run), drawn by the console's own badge()
        right = b.d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            import('/ui/js/dom.js').then((dom) => {
              const el = dom.badge('bad', '1 store value(s) refused (forged, replayed or another key\\'s)');
              document.querySelector('#fleet-body p').append(el);
              done([el.getBoundingClientRect().right, window.innerWidth,
                    document.documentElement.scrollWidth - window.innerWidth]);
            }, (e) => done(String(e)));""")
        assert isinstance(right, list) and right[0] <= right[1] + 0.5 and right[2] <= 0, right
    finally:
        b.d.set_window_size(1280, 720)
        atomic_write(cfg, original)
        wait_until_sync(lambda: "iris-beta" in fleet.api("GET", "/v1/status", READER)["routes"],
                        15, 0.05, "the name back")


def test_a_script_that_did_not_load_is_said_not_left_loading(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """One of the console's modules refused (a proxy's 502, a cut download): the page never
    booted and stayed on 'Loading…' with nothing else shown, as if still waiting; an
    operator (and a test waiting for the sign-in form) could only wait."""
    b = browser
    bad = "location = /ui/js/fleet.js { return 502; }"
    with behind_proxy(b, fleet, tmp_path, READER, bad) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: "did not load" in b.text("#who"), "the failure said", seen="body")
        assert "reload" in b.text("#signin-error") and "js/fleet.js" in b.text("#signin-error")
        assert not b.d.find_element(By.ID, "main").is_displayed()


def test_a_sign_in_check_that_waits_says_what_it_waits_for(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """GET /v1/whoami left waiting (an overloaded listener; up to its 8 s deadline): the
    page said only 'Loading…', as a page that never started does."""
    b = browser
    mute = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    hung = f"location = /v1/whoami {{ proxy_pass http://127.0.0.1:{mute.getsockname()[1]}; }}"
    proc, url = nginx_proxy(tmp_path, fleet.gateways[0].admin_port, READER, hung)
    try:
        b.d.get(url + "/ui/")
        b.wait(lambda d: "GET /v1/whoami" in b.text("#who"), "the wait said", seen="body")
        assert not b.d.find_element(By.ID, "main").is_displayed()
    finally:
        b.d.get(fleet.admin + "/ui/")
        proc.terminate()
        proc.wait(10)
        mute.close()
