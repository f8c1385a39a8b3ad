"""The console revalidates its big reads (ui/js/api.js, admin/etag.py) in a real Chromium
against a real `killgate serve` (no traffic, no canary analysis: console_rig's fleet has
both, and its analysis evidence changes the status every second): /v1/status?fields=stable and
/v1/traffic are asked for with If-None-Match and answered 304 while unchanged, the page
stays drawn from the answer it kept, and a kill made between two rounds shows in the next
one (a 304 never hides a change: the kill changes the body, hence the ETag)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    SECRET,
    GatewayProcess,
    admin_token,
    free_port,
    two_versions,
    write_config,
)
from tests.console_rig import Browser, start_backends

pytestmark = pytest.mark.timeout(120)

ALICE = admin_token("killgate:read killgate:kill", "alice", 10800)

# every answer to a status or traffic read, as the page's fetch saw it (status, sent tag)
RECORD = """
window.__seen = [];
const real = window.fetch.bind(window);
window.fetch = async (url, init) => {
  const path = new URL(url, location.href).pathname;
  const r = await real(url, init);
  if (path.endsWith('/v1/status') || path.endsWith('/v1/traffic')) {
    window.__seen.push([path.split('/').pop(), r.status,
                        (init && init.headers && init.headers['If-None-Match']) || null]);
  }
  return r;
};
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp: Path = tmp_path_factory.mktemp("console-etag")
    procs = start_backends("v1", "v2")
    cfg = write_config(tmp, two_versions(procs[0][1], procs[1][1]),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    g = GatewayProcess(cfg, env={"KILLGATE_TEST_SECRET": SECRET})
    try:
        g.wait_ready()
        yield g
    finally:
        g.stop()
        for proc, _ in procs:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module", autouse=True)
def _quick_rounds(browser: Browser) -> None:
    """The 304 and the kill are seen by the page's next refresh rounds: every 1 s here, not
    3 (tests/console_rig.py `Browser.quick_rounds`; the test is not about the period)."""
    browser.quick_rounds()


def _api(g: GatewayProcess, path: str, body: dict[str, str]) -> None:
    req = urllib.request.Request(g.admin + path, method="POST", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {ALICE}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def _row(version: str, route: str = "iris") -> str:
    return f"article[data-route='{route}'] tr[data-version='{version}']"


def test_a_304_round_keeps_the_page_and_a_kill_shows_at_once(gateway: GatewayProcess,
                                                             browser: Browser) -> None:
    b = browser
    b.sign_in(gateway.admin, ALICE, "alice")
    b.d.execute_script(RECORD)
    b.wait(lambda d: any(s == ["status", 304, s[2]] and s[2] for s in
                         d.execute_script("return window.__seen")),
           "a status round answered 304", timeout=30)
    assert "serving" in b.text(_row("v2"))  # (drawn from the kept answer)
    before = len(b.d.execute_script("return window.__seen"))
    _api(gateway, "/v1/kill", {"scope": "version", "route": "iris", "version": "v2",
                               "reason": "etag-test"})
    try:
        b.wait(lambda d: "KILLED" in b.text(_row("v2")), "v2 shown killed the next round",
               timeout=8)
        seen = b.d.execute_script("return window.__seen")[before:]
        assert ["status", 200] in [s[:2] for s in seen], seen  # (a full answer: it changed)
    finally:
        _api(gateway, "/v1/unkill", {"scope": "version", "route": "iris", "version": "v2",
                                     "reason": "done"})
        b.d.get(gateway.admin + "/ui/")
