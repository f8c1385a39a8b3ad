"""The rig for the console's browser tests: a real fleet and a real Chromium.

`running_fleet`: a redis-server, three model servers (`tests.proc_backend`), two `killgate
serve` processes on one config (free ports read back from their logs) and a thread sending
~16 requests a second through both; `Browser`: Chromium under chromedriver (Debian's
packages, never a downloaded driver), its console and network logs drained as read;
`nginx_proxy`: a real nginx that signs requests in, as an OIDC-fronting proxy does.
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
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

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

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("KILLGATE_ARTIFACTS", ROOT / "tests" / "artifacts")) / "console"
INFER = "/v2/models/iris/infer"
BODY = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                               "data": [6.1, 2.8, 4.7, 1.2]}]}).encode()
#: the console's refresh period (gateway/admin/ui/js/main.js), and the one `quick_rounds` sets
_MAIN_JS = (ROOT / "gateway" / "admin" / "ui" / "js" / "main.js").read_text()
REFRESH_MS = int(re.findall(r"^const REFRESH_MS = (\d+);", _MAIN_JS, re.M)[0])
QUICK_ROUND_MS = 1000
#: a read's deadline in the console (gateway/admin/ui/js/api.js), that quick_rounds' read_ms sets
READ_MS = int(re.findall(r"^const READ_S = (\d+);", (
    ROOT / "gateway" / "admin" / "ui" / "js" / "api.js").read_text(), re.M)[0]) * 1000


@dataclass
class Fleet:
    gateways: list[GatewayProcess]
    redis: RedisServer
    backends: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def admin(self) -> str:
        return self.gateways[0].admin

    def api(self, method: str, path: str, tok: str, gw: int = 0, body: Any = None) -> Any:
        req = urllib.request.Request(self.gateways[gw].admin + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {tok}",
                                              "Content-Type": "application/json"})
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


def start_backends(*versions: str) -> list[tuple[subprocess.Popen[bytes], int]]:
    """A model server (`tests.proc_backend`) per version, each in its own process on a free
    port: all started at once, then each waited for (an interpreter start each, ~0.5 s of
    CPU importing aiohttp: started one after the other, a fleet's three took 3x one's wall
    time on a loaded machine). If one never answers, every one started is killed."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for version in versions:
            port = free_port()
            started.append((subprocess.Popen(
                [sys.executable, "-m", "tests.proc_backend", str(port), version],
                cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent), port))
        for (proc, port), version in zip(started, versions, strict=True):
            def ready(proc: subprocess.Popen[bytes] = proc, port: int = port) -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the model server on {port} exited with "
                                         f"{proc.returncode}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready",
                                                timeout=1):
                        return True
                except OSError:
                    return False

            wait_until_sync(ready, 15, what=f"backend {version}")
    except BaseException:
        for proc, _ in started:
            proc.kill()
            proc.wait(5)
        raise
    return started


def start_backend(version: str) -> tuple[subprocess.Popen[bytes], int]:
    (started,) = start_backends(version)
    return started


LISTENING = re.compile(r'phase="listening" data="127.0.0.1:(\d+)" admin="127.0.0.1:(\d+)"')


def learn_ports(g: GatewayProcess) -> None:
    def listening() -> re.Match[str] | None:
        if g.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {g.proc.returncode}:\n{g.output()}")
        return LISTENING.search(g.output())

    m = wait_until_sync(listening, 15, what="the gateway's ports in its log")
    g.data_port, g.admin_port = int(m.group(1)), int(m.group(2))


def fleet_routes(p1: int, p2: int, p3: int) -> str:
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


def pump_traffic(fleet: Fleet, stop: threading.Event) -> None:
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


@contextmanager
def running_fleet(tmp: Path, extra: str = "", state_lines: str = "") -> Iterator[Fleet]:
    """Redis, three model servers, two `killgate serve` on one config (plus `extra`, YAML
    sections such as `approvals:`, and `state_lines`, lines of the state section such as
    `  max_staleness: 2s\n`), and the traffic pump; everything stopped on the way out."""
    redis = RedisServer(tmp)
    redis.start()
    fl = Fleet([], redis)
    stop = threading.Event()
    pump: threading.Thread | None = None
    try:
        started = start_backends("v1", "v2", "v3")
        fl.backends.extend(proc for proc, _ in started)
        ports = [port for _, port in started]
        # the same config for both instances, as in a real fleet (one digest): each binds
        # free ports (":0"), read back from its log; a folder each (logs, snapshots)
        state = (f"state:\n  backend: redis\n  url: {redis.url}\n  prefix: kgui\n"
                 f"  signing_key_env: {STATE_KEY_ENV}\n  snapshot_path: snapshot.json\n"
                 "  poll_interval: 100ms\n  heartbeat_interval: 200ms\n  instance_lease: 2s\n"
                 + state_lines)
        for name in ("a", "b"):
            (tmp / name).mkdir()
            cfg = write_config(tmp / name, fleet_routes(*ports), state=state, extra=extra,
                               name="fleet.yaml")
            fl.gateways.append(GatewayProcess(cfg, env={"KILLGATE_TEST_SECRET": SECRET,
                                                        STATE_KEY_ENV: STATE_KEY}))
        for g in fl.gateways:
            learn_ports(g)
            g.wait_ready()
        pump = threading.Thread(target=pump_traffic, args=(fl, stop), daemon=True)
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
        """The tab on about:blank: a page left open polls its module's stopped fleet."""
        self.d.get("about:blank")

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


@contextmanager
def behind_proxy(b: Browser, fleet: Fleet, tmp: Path, tok: str, locations: str = "",
                 clear: bool = False) -> Iterator[str]:
    """The page's URL through `nginx_proxy` in front of the first instance; afterwards the
    browser back on the instance's own page (its tab's token cleared first when `clear`)
    and the proxy stopped, whatever the test did."""
    proc, url = nginx_proxy(tmp, fleet.gateways[0].admin_port, tok, locations)
    try:
        yield url
    finally:
        if clear:
            b.d.execute_script("sessionStorage.clear()")
        b.d.get(fleet.admin + "/ui/")
        proc.terminate()
        proc.wait(10)


def nginx_proxy(tmp: Path, admin_port: int, tok: str,
                locations: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """A real reverse proxy in front of the admin listener that adds the Authorization
    header to everything it forwards, as an OIDC-fronting proxy does once you signed in.
    `locations`: more nginx `location` blocks (what such a proxy answers itself)."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(exe).exists():
        pytest.fail("nginx is not installed (apt-get install -y nginx)")
    tmp.chmod(0o755)  # its workers may run as an unprivileged user
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes 1;
        pid {tmp}/nginx.pid;
        error_log {tmp}/error.log warn;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp}/client_body;
            proxy_temp_path {tmp}/proxy;
            fastcgi_temp_path {tmp}/fastcgi;
            uwsgi_temp_path {tmp}/uwsgi;
            scgi_temp_path {tmp}/scgi;
            server {{
                listen 127.0.0.1:{port};
                {locations}
                location / {{
                    proxy_pass http://127.0.0.1:{admin_port};
                    proxy_http_version 1.1;
                    proxy_set_header Authorization "Bearer {tok}";
                }}
            }}
        }}
        """))
    proc = subprocess.Popen([exe, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log"),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {(tmp / 'error.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_until_sync(ready, 10, what="nginx")
    return proc, f"http://127.0.0.1:{port}"
