"""The console reads the status by parts (ui/js/statusread.js, admin/statusparts.py) in a
real Chromium against a real fleet whose canary analysis (iris-beta) changes the status
every second: each round asks for the index (?fields=index) and then only the routes whose
tag changed (iris-beta's, never the idle iris's), not the whole document; a kill on iris
shows the next round, read as iris's part alone."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import admin_token
from tests.console_rig import Browser, Fleet, running_fleet

pytestmark = pytest.mark.timeout(120)

ALICE = admin_token("killgate:read killgate:kill", "alice", 10800)

# every /v1/status read the page's fetch made: [query, HTTP status]
RECORD = """
window.__status = [];
const real = window.fetch.bind(window);
window.fetch = async (url, init) => {
  const u = new URL(url, location.href);
  const r = await real(url, init);
  if (u.pathname.endsWith('/v1/status')) window.__status.push([u.search, r.status]);
  return r;
};
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("console-parts")) as fl:
        yield fl


def _reads(b: Browser, since: int = 0) -> list[tuple[dict[str, list[str]], int]]:
    seen = b.d.execute_script("return window.__status")[since:]
    return [(parse_qs(urlsplit(q).query), code) for q, code in seen]


def _row(route: str, version: str) -> str:
    return f"article[data-route='{route}'] tr[data-version='{version}']"


def test_rounds_read_only_the_routes_that_changed(fleet: Fleet, browser: Browser) -> None:
    b = browser
    b.sign_in(fleet.admin, ALICE, "alice")
    b.wait(lambda d: "Canary analysis" in b.text("article[data-route='iris-beta']"),
           "iris-beta's canary analysis drawn", timeout=30)
    b.d.execute_script(RECORD)
    # two rounds, each an index read; iris-beta's evidence changes every second
    b.wait(lambda d: sum(q.get("fields") == ["index"] for q, _ in _reads(b)) >= 2,
           "two rounds recorded", timeout=30)
    reads = _reads(b)
    parts = [q["routes"][0] for q, code in reads if "routes" in q and code == 200]
    assert "iris-beta" in parts, reads  # (its part read again as it changed)
    assert all(p == "iris-beta" for p in parts), reads  # (never the idle iris)
    whole = [q for q, _ in reads if q.get("fields") == ["stable"] and "routes" not in q]
    assert not whole, reads  # (never the whole document again)
    assert "serving" in b.text(_row("iris", "v2"))

    before = len(b.d.execute_script("return window.__status"))
    fleet.api("POST", "/v1/kill", ALICE, body={"scope": "version", "route": "iris",
                                                "version": "v2", "reason": "parts-test"})
    try:
        b.wait(lambda d: "KILLED" in b.text(_row("iris", "v2")), "iris v2 shown killed",
               timeout=10)
        reads = _reads(b, before)
        named = [q["routes"][0].split(",") for q, _ in reads if "routes" in q]
        assert any("iris" in n for n in named), reads  # (iris's part, read alone)
        assert not [q for q, _ in reads if q.get("fields") == ["stable"] and "routes" not in q]
        assert "serving" in b.text(_row("iris-beta", "v2"))  # (the others kept, drawn)
    finally:
        fleet.api("POST", "/v1/unkill", ALICE, body={"scope": "version", "route": "iris",
                                                      "version": "v2", "reason": "done"})
        b.d.get(fleet.admin + "/ui/")
