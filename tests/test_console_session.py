"""The console's session in a real Chromium against a real fleet (items left by review):
a dialog opened by one principal never applies as another (behind a proxy whose session
changes), ages are the server's ("2 min ago" right on a laptop whose clock is off), and a
refresh that changes nothing costs next to nothing with a thousand routes."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.conftest import admin_token
from tests.console_rig import Browser, Fleet, nginx_proxy, running_fleet

pytestmark = pytest.mark.timeout(120)

ALICE = admin_token("killgate:read killgate:kill", "alice", 10800)
DAVE = admin_token("killgate:read killgate:kill", "dave", 10800)
READER = admin_token("killgate:read", "bob", 10800)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("console-session")) as fl:
        yield fl


def _kills(fleet: Fleet, reason: str) -> list[dict[str, object]]:
    events = fleet.api("GET", "/v1/audit?limit=50", READER)["events"]
    return [e for e in events if e.get("action") == "kill" and e.get("reason") == reason]


def _proxy(tmp: Path, fleet: Fleet) -> tuple[subprocess.Popen[bytes], str]:
    """A real nginx that signs the page in as alice, or as dave once its session cookie
    says so (someone else signed in to the proxy in this browser), as an OIDC proxy does."""
    session = (f'set $kgauth "{ALICE}";\n'
               f'if ($cookie_kgsession = "dave") {{ set $kgauth "{DAVE}"; }}\n')
    return nginx_proxy(tmp, fleet.gateways[0].admin_port, "$kgauth", session)


def _switch(b: Browser) -> None:
    """The proxy's session is now dave's: the next request the page makes is signed in as
    dave (the cookie the proxy would have set at his sign-in)."""
    b.d.execute_script("document.cookie = 'kgsession=dave; path=/; SameSite=Strict'")


def _open_kill_dialog(b: Browser, url: str, reason: str) -> None:
    b.d.get(url + "/ui/")
    b.wait(lambda d: b.text("[data-testid=subject]") == "alice", "alice signed in by the proxy")
    b.click("button[data-key='kill-iris/v2']")
    b.d.find_element(By.ID, "action-reason").send_keys(reason)
    assert b.d.find_element(By.ID, "action-apply").is_enabled()


def test_a_dialog_open_when_the_proxys_session_changes_is_closed(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """alice's kill dialog, her reason typed, stayed open once the proxy signed dave in:
    one click and dave killed v2 with alice's reason (found by review)."""
    b = browser
    proc, url = _proxy(tmp_path, fleet)
    try:
        _open_kill_dialog(b, url, "INC-51 alice's reason")
        _switch(b)
        b.wait(lambda d: b.text("[data-testid=subject]") == "dave", "dave shown signed in",
               timeout=10)
        b.wait(lambda d: not d.execute_script(
            "return document.getElementById('action-dialog').open"), "the dialog closed",
            timeout=5)
        assert not _kills(fleet, "INC-51 alice's reason")
    finally:
        b.d.execute_script("document.cookie = 'kgsession=; path=/; max-age=0'")
        b.d.get(fleet.admin + "/ui/")
        proc.terminate()
        proc.wait(10)


def test_apply_after_the_proxys_session_changed_sends_nothing(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """Apply clicked between the proxy's change and the page's next round (up to 3 s):
    the kill went out as dave, with alice's reason and confirmation (found by review)."""
    b = browser
    proc, url = _proxy(tmp_path, fleet)
    reason = "INC-52 alice's reason"
    try:
        _open_kill_dialog(b, url, reason)
        _switch(b)
        # at once (the round that would close the dialog may come first: then it is closed)
        b.d.execute_script("const d = document.getElementById('action-dialog');"
                           "if (d.open) document.getElementById('action-apply').click();")

        def settled(d: object) -> str | None:
            if not b.d.execute_script("return document.getElementById('action-dialog').open"):
                return "closed"
            said = b.text("#action-result [data-testid]")
            return said or None

        outcome = b.wait(settled, "the dialog closed or its answer", timeout=15)
        assert outcome == "closed" or outcome.startswith("Nothing was sent: you are now signed "
                                                         "in as dave, not alice"), outcome
        assert not _kills(fleet, reason), _kills(fleet, reason)
        if outcome != "closed":
            assert not b.d.find_element(By.ID, "action-apply").is_enabled()
            b.d.find_element(By.ID, "action-reason").send_keys(" more")  # still refused
            assert not b.d.find_element(By.ID, "action-apply").is_enabled()
    finally:
        b.d.execute_script("document.cookie = 'kgsession=; path=/; max-age=0'")
        b.d.get(fleet.admin + "/ui/")
        proc.terminate()
        proc.wait(10)


# this computer's clock two hours slow, from before the page's first script runs
SLOW_CLOCK = """
(() => {
  const R = Date, off = -7200e3;
  class D extends R {
    constructor(...a) { if (a.length === 0) super(R.now() + off); else super(...a); }
    static now() { return R.now() + off; }
  }
  window.Date = D;
})();
"""


def test_ages_are_the_servers_on_a_computer_whose_clock_is_off(fleet: Fleet,
                                                                 browser: Browser) -> None:
    """On a laptop two hours slow, a kill made a moment ago read "in 2 h" (found by review:
    the ages were the browser's clock's); now they are the server's (its Date header)."""
    b = browser
    added = b.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SLOW_CLOCK})
    try:
        fleet.api("POST", "/v1/kill", ALICE, body={"scope": "version", "route": "iris-beta",
                                                   "version": "v3", "reason": "INC-53"})
        b.sign_in(fleet.admin, READER, "bob")
        assert b.d.execute_script("return Math.round((Date.now() - performance.timeOrigin"
                                  " - performance.now()) / 60000)") == -120  # the clock is off
        kill = str(b.wait(lambda d: [li for li in b.text("#kills-body").split("\n")
                                     if "INC-53" in li], "the kill"))
        assert " s ago" in kill and "in 2 h" not in kill, kill
        got = b.d.execute_async_script("""
            const [iso, done] = arguments;
            import('/ui/js/dom.js').then((m) => done(m.fmtAgo(iso)));""",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 150)))
        assert got in ("2 min ago", "3 min ago"), got
        assert "clock is 2 h behind the server's" in b.text("[data-testid=clock-off]")
    finally:
        b.d.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                            {"identifier": added["identifier"]})
        fleet.api("POST", "/v1/unkill", ALICE, body={"scope": "version", "route": "iris-beta",
                                                     "version": "v3", "reason": "INC-53 done"})
        b.d.get(fleet.admin + "/ui/")


# every API answer as a cache in front of the listener gives a stored one: its Date an hour
# old, its Age saying so
CACHED_ANSWERS = """
(() => {
  const real = window.fetch.bind(window);
  window.fetch = async (url, init) => {
    const resp = await real(url, init);
    if (!new URL(url, location.href).pathname.includes('/v1/')) return resp;
    const headers = new Headers(resp.headers);
    headers.set('Date', new Date(Date.now() - 3600e3).toUTCString());
    headers.set('Age', '3600');
    return new Response(await resp.text(), {status: resp.status, headers});
  };
})();
"""


def test_an_answer_a_cache_kept_does_not_set_the_servers_clock(fleet: Fleet,
                                                                 browser: Browser) -> None:
    """The ages are the server's clock's, taken from an answer's Date: an answer a cache
    kept (Age) carries the Date of when it was stored, an hour old here, and every age
    read an hour younger (a kill made a moment ago: "in 60 min"; found by review of the
    impconsole2 merge). An answer with an Age header does not set the clock."""
    b = browser
    added = b.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CACHED_ANSWERS})
    try:
        fleet.api("POST", "/v1/kill", ALICE, body={"scope": "version", "route": "iris-beta",
                                                   "version": "v3", "reason": "INC-57"})
        b.sign_in(fleet.admin, READER, "bob")
        kill = str(b.wait(lambda d: [li for li in b.text("#kills-body").split("\n")
                                     if "INC-57" in li], "the kill"))
        assert " s ago" in kill and "in 60 min" not in kill, kill
        off = b.d.execute_async_script("""
            const done = arguments[0];
            import('/ui/js/clock.js').then((m) => done(m.offset()));""")
        assert abs(off) < 5000, off
        assert not b.text("[data-testid=clock-off]")
    finally:
        b.d.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                            {"identifier": added["identifier"]})
        fleet.api("POST", "/v1/unkill", ALICE, body={"scope": "version", "route": "iris-beta",
                                                     "version": "v3", "reason": "INC-57 done"})
        b.d.get(fleet.admin + "/ui/")


# the page's /v1/status and /v1/traffic as a gateway with 1000 routes answers them (the
# real iris route's status, tag and series, 1000 times), the same every round: nothing
# changes. The status is read by parts (ui/js/statusread.js): the index every round
# (counted), and the routes its tags say changed (?routes=a,b), as admin/statusparts.py answers.
THOUSAND_ROUTES = """
window.__rounds = 0;
window.__parts = 0;
const real = window.fetch.bind(window);
const frozen = {};
const names = Array.from({length: 1000}, (_, i) => `r${i}`);
const each = (v) => Object.fromEntries(names.map((n) => [n, v]));
const JSON_TYPE = {'Content-Type': 'application/json'};
const answer = (doc) => new Response(JSON.stringify(doc), {status: 200, headers: JSON_TYPE});
async function read(u, search, init) {
  const v = new URL(u);
  v.search = search;
  const headers = {...init.headers};
  delete headers['If-None-Match'];  // (a tag the page kept from the real answers)
  return (await real(v, {...init, headers})).json();
}
window.fetch = async (url, init) => {
  const u = new URL(url, location.href);
  const path = u.pathname;
  if (path.endsWith('/v1/traffic')) {
    if (!frozen.traffic) {
      const doc = await read(u, u.search, init);
      doc.routes = each(doc.routes.iris);
      frozen.traffic = JSON.stringify(doc);
    }
    return new Response(frozen.traffic, {status: 200, headers: JSON_TYPE});
  }
  if (!path.endsWith('/v1/status')) return real(url, init);
  if (!frozen.whole) {
    const whole = await read(u, '?fields=stable', init);
    const index = await read(u, '?fields=index', init);
    frozen.one = whole.routes.iris;
    frozen.tag = index.route_etags.iris;
    whole.routes = each(frozen.one);
    index.route_etags = each(frozen.tag);
    frozen.whole = whole;
    frozen.index = index;
  }
  const q = u.searchParams;
  // (a field outside the routes changes)
  const bump = (doc) => (window.__bump ? {...doc, bumped: window.__rounds} : doc);
  if (q.get('fields') === 'index') {
    window.__rounds++;
    return answer(bump(frozen.index));
  }
  if (q.has('routes')) {
    window.__parts++;
    const some = q.get('routes').split(',');
    const {route_etags: _, ...head} = frozen.index;
    return answer({...head, routes: Object.fromEntries(some.map((n) => [n, frozen.one])),
                   route_etags: Object.fromEntries(some.map((n) => [n, frozen.tag]))});
  }
  return answer(bump(frozen.whole));
};
"""


def test_a_refresh_that_changes_nothing_costs_little_with_a_thousand_routes(
        fleet: Fleet, browser: Browser) -> None:
    """Every refresh rebuilt every route card: with 1000 routes about a second of script
    every 3 s though nothing had changed (found by review); a card is now redrawn only
    when its data changed. Measured as Chromium's own ScriptDuration (CDP Performance).
    (Rounds every 1 s here, not 3: what is measured is a round's own task time, which the
    period does not change, and the test waits for seven rounds; tests/console_rig.py)"""
    b = browser
    b.quick_rounds()
    b.sign_in(fleet.admin, ALICE, "alice")
    b.d.execute_script(THOUSAND_ROUTES)
    b.d.execute_cdp_cmd("Performance.enable", {})
    try:
        def metrics() -> dict[str, float]:
            got = b.d.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
            return {m["name"]: float(m["value"]) for m in got}

        # the first round with 1000 routes draws them all; from the next, nothing changed
        b.wait(lambda d: d.execute_script("return window.__rounds") >= 2 and len(d.find_elements(
            By.CSS_SELECTOR, "#routes-body article.route")) == 1000, "1000 route cards",
            timeout=30)
        # a round ends drawing the banner ("Updated …"): waited for in the page, so no
        # WebDriver call adds to what is measured, from the end of one round to the next's
        next_round = """
            const done = arguments[0], n = window.__rounds;
            const was = document.getElementById('banner').textContent;
            const tick = () => (window.__rounds > n && document.getElementById('banner')
              .textContent !== was ? done() : setTimeout(tick, 100));
            tick();"""
        keys = ("ScriptDuration", "TaskDuration", "DevToolsCommandDuration")
        b.d.execute_async_script(next_round)
        parts = b.d.execute_script("return window.__parts")
        seen = [metrics()]
        for _ in range(2):  # (the cheaper of two rounds: other processes share the CPU)
            b.d.execute_async_script(next_round)
            seen.append(metrics())
        spent = min(({k: round((m1[k] - m0[k]) * 1000) for k in keys}
                     for m0, m1 in itertools.pairwise(seen)), key=lambda x: x["TaskDuration"])
        busy = spent["TaskDuration"] - spent["DevToolsCommandDuration"]
        # (no route's tag changed: its rounds read the index alone, no route again)
        assert b.d.execute_script("return window.__parts") == parts
        print(f"at 1000 routes, a round that changed nothing: {spent} ms; busy {busy} ms")
        # the task time of the page's main thread: ~2 s before, ~70 ms after. (Chromium's
        # ScriptDuration leaves the drawing out: 38 ms before, ~20 ms after; not asserted)
        assert busy < 300, spent
        # the status answer differs, its routes do not: the same cards stay (not redrawn)
        b.d.execute_script("window.__bump = true; document.querySelectorAll("
                           "'#routes-body article.route').forEach((a) => { a.__kept = true; });")
        b.d.execute_async_script(next_round)
        m0 = metrics()
        b.d.execute_async_script(next_round)
        m1 = metrics()
        print("a round whose status differs outside the routes: task time",
              round((m1["TaskDuration"] - m0["TaskDuration"]) * 1000), "ms")
        kept = b.d.execute_script("return Array.from(document.querySelectorAll("
                                  "'#routes-body article.route')).filter((a) => a.__kept).length")
        assert kept == 1000, kept
    finally:
        b.d.execute_cdp_cmd("Performance.disable", {})
        b.real_rounds()
        b.d.get(fleet.admin + "/ui/")


def test_a_write_prepared_by_one_principal_and_signed_in_as_another_is_refused(
        fleet: Fleet) -> None:
    """The page asks who is signed in just before Apply sends, yet a proxy's session may
    change between that answer and the write: the write names who prepared it
    (X-Killgate-Subject) and the API refuses it signed in as anyone else (found by review:
    nothing closed that last window)."""
    body = json.dumps({"scope": "version", "route": "iris-beta", "version": "v3",
                       "reason": "INC-54 alice's reason"}).encode()
    req = urllib.request.Request(fleet.admin + "/v1/kill", method="POST", data=body,
                                 headers={"Authorization": f"Bearer {DAVE}",
                                          "Content-Type": "application/json",
                                          "X-Killgate-Subject": "alice"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 409
    answer = json.loads(err.value.read())["error"]
    assert answer["type"] == "principal_changed", answer
    assert "prepared by 'alice'" in answer["message"] and "'dave'" in answer["message"], answer
    assert not _kills(fleet, "INC-54 alice's reason")
    assert not [k for k in fleet.api("GET", "/v1/status", READER)["kills"]
                if k.get("version") == "v3"]
