"""The operator console in a real browser (Chromium driven by Selenium), against a real fleet.

Two `killgate serve` processes share a real redis-server; three real model-server
processes back two routes (`iris`, 90/10, and `iris-beta`, a canary with analysis and
progressive steps); a thread sends a little traffic the whole time. One browser session
serves the module. Screenshots go to tests/artifacts/console/ (or $KILLGATE_ARTIFACTS);
with KILLGATE_UPDATE_DOCS=1 the canary screenshot also replaces docs/console.png.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from gateway.admin.auth import mint
from tests.conftest import (
    ROOT,
    SECRET,
    STATE_KEY,
    STATE_KEY_ENV,
    GatewayProcess,
    RedisServer,
    die_with_parent,
    free_port,
    wait_until_sync,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("KILLGATE_ARTIFACTS", ROOT / "tests" / "artifacts")) / "console"
INFER = "/v2/models/iris/infer"
BODY = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                               "data": [6.1, 2.8, 4.7, 1.2]}]}).encode()
RECEIPT = re.compile(r"^generation \d+: applied by 2/2 instance\(s\) in [\d.]+ ms")


def token(sub: str, scope: str) -> str:
    return mint(SECRET, sub, scope, 10800, "killgate", "killgate-admin")


KILLER = token("alice", "killgate:read killgate:kill")
READER = token("bob", "killgate:read")
ADMIN = token("carol", "killgate:admin")


# --------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    gateways: list[GatewayProcess]
    redis: RedisServer
    backends: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def admin(self) -> str:
        return self.gateways[0].admin

    def api(self, method: str, path: str, tok: str = ADMIN, gw: int = 0) -> Any:
        req = urllib.request.Request(self.gateways[gw].admin + path, method=method,
                                     headers={"Authorization": f"Bearer {tok}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def served_by(self, gw: int, n: int, headers: dict[str, str] | None = None) -> set[str]:
        """The versions that answered `n` requests through instance `gw`'s data plane."""
        conn = http.client.HTTPConnection("127.0.0.1", self.gateways[gw].data_port, timeout=5)
        seen = set()
        try:
            for _ in range(n):
                conn.request("POST", INFER, BODY, headers or {})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
                seen.add(r.headers.get("x-killgate-version", "?"))
        finally:
            conn.close()
        return seen


def _backend(version: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.proc_backend", str(port), version],
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return True
        except OSError:
            return False

    wait_until_sync(ready, 15, what=f"backend {version}")
    return proc, port


def _routes(p1: int, p2: int, p3: int) -> str:
    return textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          allow_pin: true
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90}}
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 10}}
        - name: iris-beta
          match: {{path_prefix: /v2/models/iris, header: {{x-tenant: beta}}}}
          stable: v2
          versions:
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 75}}
            - {{name: v3, url: "http://127.0.0.1:{p3}", weight: 25}}
          analysis: {{interval: 1s, window: 20s, min_requests: 10, steps: [25, 50, 100],
                      step_interval: 10m, max_p99_ratio: 1000, p99_slack: 10s}}
        """)


def _traffic(fleet: Fleet, stop: threading.Event) -> None:
    """About 16 requests a second through both instances, to both routes."""
    conns = [http.client.HTTPConnection("127.0.0.1", g.data_port, timeout=5)
             for g in fleet.gateways]
    i = 0
    while not stop.wait(0.06):
        i += 1
        conn = conns[i % 2]
        try:
            conn.request("POST", INFER, BODY, {"x-tenant": "beta"} if i % 4 < 2 else {})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
    for c in conns:
        c.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("console")
    redis = RedisServer(tmp)
    redis.start()
    fl = Fleet([], redis)
    stop = threading.Event()
    pump: threading.Thread | None = None
    try:
        ports = []
        for v in ("v1", "v2", "v3"):
            proc, port = _backend(v)
            fl.backends.append(proc)
            ports.append(port)
        for name in ("a", "b"):
            state = (f"state:\n  backend: redis\n  url: {redis.url}\n  prefix: kgui\n"
                     f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
                     f"  snapshot_path: {tmp}/snapshot-{name}.json\n  poll_interval: 100ms\n"
                     f"  heartbeat_interval: 200ms\n  instance_lease: 2s\n")
            cfg = write_config(tmp, _routes(*ports), state=state, name=f"{name}.yaml",
                               listen=f"127.0.0.1:{free_port()}",
                               admin=f"127.0.0.1:{free_port()}")
            fl.gateways.append(GatewayProcess(cfg, env={"KILLGATE_TEST_SECRET": SECRET,
                                                        STATE_KEY_ENV: STATE_KEY}))
        for g in fl.gateways:
            g.wait_ready()
        pump = threading.Thread(target=_traffic, args=(fl, stop), daemon=True)
        pump.start()
        yield fl
    finally:
        stop.set()
        if pump is not None:
            pump.join(10)
        for g in fl.gateways:
            g.stop()
        for b in fl.backends:
            b.kill()
            b.wait(5)
        redis.kill()


# --------------------------------------------------------------------------- the browser


class Browser:
    """One Chromium for the module; its logs are drained into lists as they are read."""

    def __init__(self, profile: Path) -> None:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    f"--user-data-dir={profile}", "--window-size=1280,720"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.d = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        self.d.set_script_timeout(15)
        self.console: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (the document asking, the URL)

    def drain(self) -> list[dict[str, Any]]:
        """New console entries (and every request URL the browser made, kept aside)."""
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                p = msg["params"]
                self.requests.append((p.get("documentURL", ""), p["request"]["url"]))
        new = self.d.get_log("browser")
        self.console.extend(new)
        return new

    def wait(self, pred: Callable[[webdriver.Chrome], Any], what: str, timeout: float = 20,
             seen: str = "#main") -> Any:
        try:
            return WebDriverWait(self.d, timeout, 0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(pred)
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; the page "
                                 f"shows:\n{self.text(seen)[-3000:]}") from None

    def text(self, css: str) -> str:
        els = self.d.find_elements(By.CSS_SELECTOR, css)
        return " ".join(e.text for e in els)

    def click(self, css: str) -> None:
        """Click what `css` finds now (the page re-renders every few seconds: retried)."""
        def attempt(d: webdriver.Chrome) -> bool:
            try:
                el = d.find_element(By.CSS_SELECTOR, css)
                d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
                el.click()
                return True
            except (StaleElementReferenceException, ElementClickInterceptedException):
                return False
            except WebDriverException as exc:
                if "no such element" in str(exc):
                    return False
                raise
        self.wait(attempt, f"a clickable {css}")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.d.save_screenshot(str(ARTIFACTS / name))

    def sign_in(self, url: str, tok: str, subject: str) -> None:
        self.d.set_window_size(1280, 720)
        self.d.get(url + "/ui/")

        def form_or_signout(d: webdriver.Chrome) -> WebElement | None:
            out = _shown(d, "#signout")  # still signed in from before: sign out first
            if out is not None:
                out.click()
            return _shown(d, "#token")

        field_ = self.wait(form_or_signout, "the sign-in form")
        field_.send_keys(tok)
        self.click("#signin-form button[type=submit]")
        self.wait(lambda d: self.text("[data-testid=subject]") == subject, f"{subject} signed in")
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "article[data-route=iris] tr"),
                  "the routes")


def _shown(d: webdriver.Chrome, css: str) -> WebElement | None:
    els = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
    return els[0] if els else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (apt-get install -y "
                    "chromium chromium-driver; .ci/run does)")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.d.quit()


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
    v1, v2 = b.text(_row("v1")), b.text(_row("v2"))
    assert "90" in v1 and "90 %" in v1 and "10" in v2 and "10 %" in v2, (v1, v2)
    assert "serving" in v2
    # a kill-scoped token: kill buttons, no rollout ones
    assert b.d.find_elements(By.CSS_SELECTOR, "button[data-key='kill-iris-v2']")
    assert not b.d.find_elements(By.CSS_SELECTOR, "button[data-key^='promote-'], "
                                                  "button[data-key^='weights-']")

    b.click("button[data-key='kill-iris-v2']")
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

    b.click("button[data-key='unkill-iris-v2']")
    assert "Lift the kill" in b.text("#action-title")
    receipt = _apply(b, "INC-7: v2.1 deployed", confirm=True)
    assert RECEIPT.match(receipt), receipt
    b.click("#action-cancel")
    b.wait(lambda d: "serving" in b.text(_row("v2") + " [data-testid=state]"), "v2 serving")
    assert fleet.api("GET", "/v1/status", READER, gw=1)["kills"] == []
    for gw in (0, 1):
        assert fleet.served_by(gw, 3, {"x-killgate-pin": "v2"}) == {"v2"}
    assert not [e for e in b.drain() if e["level"] == "SEVERE"], b.console


def test_keyboard_reaches_a_kill_button_and_the_dialog(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, KILLER, "alice")
    b.d.find_element(By.TAG_NAME, "body").click()
    keys = ActionChains(b.d)
    for _ in range(60):
        keys.send_keys(Keys.TAB).perform()
        if b.d.execute_script("return document.activeElement.dataset.key") == "kill-iris-v2":
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
    kill = b.wait(lambda d: _shown(d, "button[data-key='kill-iris-v2']"), "the kill button")
    assert kill.is_displayed()
    b.shot("narrow.png")


def test_read_only_token_sees_no_actions_and_a_forced_kill_is_refused(fleet: Fleet,
                                                                     browser: Browser) -> None:
    b = browser
    b.drain()
    b.sign_in(fleet.admin, READER, "bob")
    b.wait(lambda d: "serving" in b.text(_row("v2")), "the versions")
    buttons = [e.text for e in b.d.find_elements(By.CSS_SELECTOR, "#main button")]
    assert buttons == ["Verify the whole trail"], buttons
    before = fleet.api("GET", "/v1/status", READER)
    forced = b.d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/js/api.js').then((api) => api.call('POST', '/v1/kill?wait=1s',
            {scope: 'version', route: 'iris', version: 'v2', reason: 'forced from the console'}))
          .then((r) => done({status: r.status}),
                (e) => done({status: e.status, type: e.type, message: e.apiMessage}));""")
    assert forced == {"status": 403, "type": "forbidden",
                      "message": "the token lacks the scope 'killgate:kill'"}, forced
    after = fleet.api("GET", "/v1/status", READER)
    assert after["kills"] == [] and after["generation"] == before["generation"]
    assert fleet.served_by(0, 3, {"x-killgate-pin": "v2"}) == {"v2"}
    refused = [e for e in b.drain() if e["level"] == "SEVERE"]
    assert all("/v1/kill" in e["message"] and "403" in e["message"] for e in refused), \
        [e["message"] for e in refused]


def test_admin_sets_weights_releases_and_verifies_the_whole_trail(fleet: Fleet,
                                                                  browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, ADMIN, "carol")
    b.click("button[data-key='weights-iris']")
    for version, weight in (("v1", "80"), ("v2", "20")):
        box = b.d.find_element(By.ID, f"f-w-{version}")
        box.clear()
        box.send_keys(weight)
    changes = b.text("#action-changes")
    assert "v2 weight" in changes and "20 (20 % before kills and health)" in changes, changes
    assert RECEIPT.match(_apply(b, "shift 20 % to v2"))
    b.click("#action-cancel")
    b.wait(lambda d: "latched" in b.text("article[data-route='iris'] header"), "the latch")
    b.wait(lambda d: "20 %" in b.text(_row("v2")), "v2 at 20 %")
    assert "10" in b.text(_row("v2") + " td.num")  # the file's weight, still shown
    # an audit event with floats (weights 80.0) re-hashed in the browser: exact text kept
    b.wait(lambda d: "Chain verified" in b.text(".chain"), "the chain verified")
    b.click("button[data-key='release-iris']")
    assert "v1 90, v2 10" in b.text("#action-changes")
    assert RECEIPT.match(_apply(b, "back to the file"))
    b.click("#action-cancel")
    b.wait(lambda d: "latched" not in b.text("article[data-route='iris'] header"), "released")
    b.click("button[data-key='audit-verify-all']")
    b.wait(lambda d: "the whole trail" in b.text(".chain"), "the whole trail verified")
    assert "Chain verified" in b.text(".chain"), b.text(".chain")


def test_canary_screenshot_for_the_readme(fleet: Fleet, browser: Browser) -> None:
    b = browser
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
    if os.environ.get("KILLGATE_UPDATE_DOCS") == "1":
        shutil.copy(ARTIFACTS / "console-canary.png", ROOT / "docs" / "console.png")


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
    assert any(u.endswith("/v1/status") for u in ours)
    for tok in (KILLER, READER, ADMIN):
        assert not [u for _, u in b.requests if tok in u or tok[-20:] in u]
    assert not [e for e in b.console if "Content Security Policy" in e["message"]
                or "Trusted Type" in e["message"]], b.console
    # apart from the forced 403 of the read-only test, the console stayed clean
    severe = [e for e in b.console if e["level"] == "SEVERE"
              and not ("/v1/kill" in e["message"] and "403" in e["message"])]
    assert not severe, severe
    assert b.d.get_cookies() == []
    assert b.d.execute_script("return localStorage.length") == 0
    assert b.d.execute_script("return sessionStorage.getItem('killgate.token')") == READER
