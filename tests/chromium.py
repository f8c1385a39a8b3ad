"""Chromium under chromedriver for the console's browser tests (Debian's packages, never a
downloaded driver): `Browser`, one for a test process (conftest's `browser` fixture makes it
fresh for each module), its console and network logs drained as read; `shown`. The fleet,
the traffic and the signing nginx are tests/console_rig.py's.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import ROOT, die_with_parent

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("KILLGATE_ARTIFACTS", ROOT / "tests" / "artifacts")) / "console"
#: the console's refresh period (gateway/admin/ui/js/main.js), and the one `quick_rounds` sets
_MAIN_JS = (ROOT / "gateway" / "admin" / "ui" / "js" / "main.js").read_text()
REFRESH_MS = int(re.findall(r"^const REFRESH_MS = (\d+);", _MAIN_JS, re.M)[0])
QUICK_ROUND_MS = 1000
#: a read's deadline in the console (gateway/admin/ui/js/api.js), that quick_rounds' read_ms sets
READ_MS = int(re.findall(r"^const READ_S = (\d+);", (
    ROOT / "gateway" / "admin" / "ui" / "js" / "api.js").read_text(), re.M)[0]) * 1000
#: WebDriver's page load timeout, which the tests keep (Browser.blank shortens it for a moment)
PAGE_LOAD_S = 300


class Browser:
    """One Chromium for a test process, made fresh for each module (`fresh`); its logs are
    drained into lists as they are read."""

    def __init__(self, profile: Path) -> None:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    f"--user-data-dir={profile}", "--window-size=1280,720"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        # (chromedriver dies with the test run, even one its timeout ends without teardown)
        self.d = webdriver.Chrome(options=opts, service=Service(
            CHROMEDRIVER, popen_kw={"preexec_fn": die_with_parent}))
        self.d.set_script_timeout(15)
        self.d.set_page_load_timeout(PAGE_LOAD_S)
        self.console: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (the document asking, the URL)
        self._quick: str | None = None  # (quick_rounds' script, while it is added)

    def fresh(self) -> None:
        """As a new Chromium for the next module, without starting one (~1.4 s of CPU and
        a few seconds of a loaded machine's wall time each; a dozen modules use one): a
        new tab, every other closed (its page, its sessionStorage, the token the console
        keeps there, the scripts added to it by CDP, quick_rounds' among them, go with
        it), no cookies, no cache, the default window size, and the logs drained and
        forgotten (a module reads only what its own tests did). A module's fleet listens
        on ports of its own: the pages a tab opens later are of another origin."""
        d = self.d
        old = d.window_handles
        d.switch_to.new_window("tab")
        tab = d.current_window_handle
        for h in old:
            d.switch_to.window(h)
            d.close()
        d.switch_to.window(tab)
        d.execute_cdp_cmd("Network.clearBrowserCookies", {})
        d.execute_cdp_cmd("Network.clearBrowserCache", {})
        d.set_window_size(1280, 720)
        self._quick = None
        self.drain()
        self.console.clear()
        self.requests.clear()

    def blank(self) -> None:
        """The tab on about:blank: a page left open polls its module's stopped fleet. Within
        10 s, not WebDriver's 300 s page load: a tab that cannot leave its page is closed
        by the next module's `fresh`."""
        self.d.set_page_load_timeout(10)
        try:
            self.d.get("about:blank")
        finally:
            self.d.set_page_load_timeout(PAGE_LOAD_S)

    def quick_rounds(self, ms: int = QUICK_ROUND_MS, read_ms: int | None = None) -> None:
        """From the next page load on, the console's refresh round every `ms` instead of
        every REFRESH_MS (main.js's constant, 3 s), for a module whose tests wait for what
        a round draws (a change made elsewhere, a forgery, a receipt's aftermath) and not
        on the period itself: each such wait cost up to 3 s, ~1.5 on average. Only a timer
        set by main.js itself for exactly REFRESH_MS is shortened (the refresh loop and the
        sign-in's retry); api.js's waits (a 429's Retry-After, a read's deadline) keep
        their time, but with `read_ms` a read's deadline (api.js's READ_S) is `read_ms`
        (for a test that waits for a hung listener's read to give up, not on how long it
        waits: 8 s of nothing each). `window.__kgQuickRounds` counts the timers
        shortened."""
        src = textwrap.dedent("""\
            (() => {
              const real = window.setTimeout;
              window.__kgQuickRounds = 0;
              window.setTimeout = function (fn, ms, ...rest) {
                const caller = (new Error().stack || "").split("\\n")[2] || "";
                if (ms === %d && caller.includes("/ui/js/main.js:")) {
                  ms = %d;
                  window.__kgQuickRounds += 1;
                } else if (%d > 0 && ms === %d && caller.includes("/ui/js/api.js:")) {
                  ms = %d;
                  window.__kgQuickRounds += 1;
                }
                return real.call(window, fn, ms, ...rest);
              };
            })();""") % (REFRESH_MS, ms, read_ms or 0, READ_MS, read_ms or 0)
        self.real_rounds()
        self._quick = self.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                             {"source": src})["identifier"]

    def real_rounds(self) -> None:
        """From the next page load on, the console's own period again."""
        if self._quick is not None:
            self.d.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                   {"identifier": self._quick})
            self._quick = None

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
            logs = "\n".join(str(e.get("message", ""))[:300] for e in self.drain()[-10:])
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; the page "
                                 f"shows:\n{self.text(seen)[-3000:]}\n(the header: "
                                 f"{self.text('header')[:300]!r}; the browser's console: "
                                 f"{logs or 'nothing new'}; requests: "
                                 f"{[u for _, u in self.requests[-8:]]})") from None

    def text(self, css: str) -> str:
        """What `css` finds shows now. The page redraws a part whose data changed, every
        round (every second with quick_rounds): an element found just before a redraw is
        gone when its text is read, so it is found again (test_console_browser_newer's
        decline test failed so here, reading the approval it had just waited for)."""
        for _ in range(9):
            with suppress(StaleElementReferenceException):
                return " ".join(e.text for e in self.d.find_elements(By.CSS_SELECTOR, css))
        return " ".join(e.text for e in self.d.find_elements(By.CSS_SELECTOR, css))

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
            out = shown(d, "#signout")  # still signed in from before: sign out first
            if out is not None:
                out.click()
            return shown(d, "#token")

        field_ = self.wait(form_or_signout, "the sign-in form", seen="body")
        assert not self.d.find_element(By.ID, "main").is_displayed()  # nothing left showing
        field_.send_keys(tok)
        self.click("#signin-form button[type=submit]")
        self.wait(lambda d: self.text("[data-testid=subject]") == subject, f"{subject} signed in")
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "article[data-route=iris] tr"),
                  "the routes")


def shown(d: webdriver.Chrome, css: str) -> WebElement | None:
    els = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
    return els[0] if els else None
