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


@pytest.fixture(scope="module", autouse=True)
def _quick_rounds(browser: Browser) -> None:
    """What the first test waits for is drawn by the page's next refresh rounds: every 1 s
    here, not 3 (tests/console_rig.py `Browser.quick_rounds`; no test here is about the
    period; the others read the status from the page's own module, not by its rounds)."""
    browser.quick_rounds()


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
    # two rounds, each an index read; iris-beta's evidence changes every second (a round
    # a second apart may come before its next change: until its part was read again)
    b.wait(lambda d: sum(q.get("fields") == ["index"] for q, _ in _reads(b)) >= 2
           and any(q.get("routes") == ["iris-beta"] for q, _ in _reads(b)),
           "two rounds recorded, one reading iris-beta's part", timeout=30)
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


def test_a_route_gone_between_reads_or_an_older_instance_reads_the_whole(
        fleet: Fleet, browser: Browser) -> None:
    """A route the index named that a reload dropped before the parts were read (the real
    gateway's 404 unknown_route), and an instance from before ?fields=index behind the same
    balancer (its 400): either way the page reads the whole document, never nothing."""
    b = browser
    b.sign_in(fleet.admin, ALICE, "alice")
    got = b.d.execute_async_script("""
        const done = arguments[0];
        const real = window.fetch.bind(window);
        let mode = 'gone';
        const seen = [];
        window.fetch = async (url, init) => {
          const u = new URL(url, location.href);
          if (u.pathname.endsWith('/v1/status')) seen.push(mode + ' ' + u.search);
          if (!u.pathname.endsWith('/v1/status') || u.searchParams.get('fields') !== 'index') {
            return real(url, init);
          }
          if (mode === 'old') {
            return new Response(JSON.stringify({error: {type: 'bad_request',
              message: 'fields must be all or stable'}}), {status: 400,
              headers: {'Content-Type': 'application/json'}});
          }
          const headers = {...init.headers};
          delete headers['If-None-Match'];
          const index = await (await real(url, {...init, headers})).json();
          index.route_etags = {...index.route_etags, 'gone-route': 'f'.repeat(32)};
          index.read = seen.length;  // (each index another: never the kept one again)
          return new Response(JSON.stringify(index), {status: 200,
            headers: {'Content-Type': 'application/json'}});
        };
        // (a module of its own: the page's rounds keep theirs)
        import('/ui/js/statusread.js?fresh=1').then(async (m) => {
          try {
            const first = (await m.readStatus()).data;  // (the first: the whole document)
            const gone = (await m.readStatus()).data;   // (gone-route asked for: 404)
            mode = 'old';
            const old = (await m.readStatus()).data;
            done({first: Object.keys(first.routes), gone: Object.keys(gone.routes),
                  old: Object.keys(old.routes), seen});
          } catch (exc) {
            done({error: String(exc), seen});
          } finally {
            window.fetch = real;
          }
        });""")
    try:
        assert "error" not in got, got
        # (in the table's order, as the whole document has them)
        assert got["first"] == got["gone"] == got["old"], got
        assert sorted(got["first"]) == ["iris", "iris-beta"], got
        # (the page's own rounds go through the same fetch: what they add is not counted)
        seen = got["seen"]
        # (its part asked for; that answer's 404: the whole document drawn that round)
        assert any(s.startswith("gone ?fields=stable&routes=") and "gone-route" in s
                   for s in seen), seen
        assert "gone ?fields=stable" in seen, seen
        assert "old ?fields=stable" in seen, seen
    finally:
        b.d.get(fleet.admin + "/ui/")


def test_a_change_between_the_index_and_the_parts_is_never_shown_half(
        fleet: Fleet, browser: Browser) -> None:
    """A kill applied after the index was read and before the changed routes were: the
    parts answer is of the new routing table, the index (its kills, its generation) of the
    old one. The page must not draw that mix (a route shown killed while the kills list,
    the generation, lack its kill; or the other way round at a lift): it reads the whole
    document anew, one table's, and draws that."""
    b = browser
    b.sign_in(fleet.admin, ALICE, "alice")
    got = b.d.execute_async_script("""
        const [tok, done] = arguments;
        const real = window.fetch.bind(window);
        let armed = false;
        const auth = {Authorization: 'Bearer ' + tok, 'Content-Type': 'application/json'};
        const generation = async () => (await (await real('/v1/status?fields=index',
          {headers: auth, cache: 'no-store'})).json()).generation;
        window.fetch = async (url, init) => {
          const u = new URL(url, location.href);
          if (!armed || !u.pathname.endsWith('/v1/status')
              || u.searchParams.get('fields') !== 'index') return real(url, init);
          armed = false;
          const headers = {...init.headers};
          delete headers['If-None-Match'];
          const index = await (await real(url, {...init, headers})).json();
          // (iris-beta's part asked for: its tag another than the one kept)
          index.route_etags = {...index.route_etags, 'iris-beta': 'f'.repeat(32)};
          // the kill lands between the two reads (applied here before the parts are read)
          const was = index.generation;
          const r = await real('/v1/kill', {method: 'POST', headers: auth, body: JSON.stringify(
            {scope: 'route', route: 'iris-beta', reason: 'between-reads'})});
          if (r.status >= 300) throw new Error('kill: ' + r.status + ' ' + await r.text());
          for (let i = 0; i < 100 && await generation() === was; i++) {
            await new Promise((ok) => setTimeout(ok, 50));
          }
          return new Response(JSON.stringify(index), {status: 200,
            headers: {'Content-Type': 'application/json'}});
        };
        import('/ui/js/statusread.js?fresh=2').then(async (m) => {
          try {
            await m.readStatus();  // (the first: the whole document)
            armed = true;
            const doc = (await m.readStatus()).data;
            done({generation: doc.generation,
                  kills: doc.kills.filter((k) => k.route === 'iris-beta').length,
                  killed: doc.routes['iris-beta'].killed});
          } catch (exc) {
            done({error: String(exc)});
          } finally {
            window.fetch = real;
          }
        });""", ALICE)
    try:
        assert "error" not in got, got
        # one table's document: the kill in the kills list and on the route's card, both
        assert got["kills"] == 1 and got["killed"], got
    finally:
        fleet.api("POST", "/v1/unkill", ALICE, body={"scope": "route", "route": "iris-beta",
                                                      "reason": "done"})
        b.d.get(fleet.admin + "/ui/")


def test_a_part_is_kept_only_with_the_tag_it_was_answered_with(
        fleet: Fleet, browser: Browser) -> None:
    """The first round's index is read, then iris is killed, then its part is read (killed);
    then the kill is lifted: iris's part is again what the index's tag said. A part kept
    under the index's tag (not its own answer's) was never asked for again: iris shown
    killed for good after the lift (and, the other way round, shown serving after a
    lift and a new kill: a kill silently lifted on the page)."""
    b = browser
    b.sign_in(fleet.admin, ALICE, "alice")
    got = b.d.execute_async_script("""
        const [tok, done] = arguments;
        const real = window.fetch.bind(window);
        let armed = true;
        const auth = {Authorization: 'Bearer ' + tok, 'Content-Type': 'application/json'};
        const generation = async () => (await (await real('/v1/status?fields=index',
          {headers: auth, cache: 'no-store'})).json()).generation;
        const act = async (path, was) => {
          const r = await real(path, {method: 'POST', headers: auth, body: JSON.stringify(
            {scope: 'route', route: 'iris', reason: 'tags-test'})});
          if (r.status >= 300) throw new Error(path + ': ' + r.status + ' ' + await r.text());
          for (let i = 0; i < 100 && await generation() === was; i++) {
            await new Promise((ok) => setTimeout(ok, 50));
          }
        };
        window.fetch = async (url, init) => {
          const u = new URL(url, location.href);
          if (!armed || !u.pathname.endsWith('/v1/status')
              || u.searchParams.get('fields') !== 'index') return real(url, init);
          armed = false;
          const headers = {...init.headers};
          delete headers['If-None-Match'];
          const index = await (await real(url, {...init, headers})).json();
          await act('/v1/kill', index.generation);  // (between the index and the parts)
          return new Response(JSON.stringify(index), {status: 200,
            headers: {'Content-Type': 'application/json'}});
        };
        import('/ui/js/statusread.js?fresh=3').then(async (m) => {
          try {
            await m.readStatus();
            await act('/v1/unkill', await generation());
            const doc = (await m.readStatus()).data;
            done({kills: doc.kills.filter((k) => k.route === 'iris').length,
                  killed: doc.routes.iris.killed});
          } catch (exc) {
            done({error: String(exc)});
          } finally {
            window.fetch = real;
          }
        });""", ALICE)
    try:
        assert "error" not in got, got
        assert got == {"kills": 0, "killed": None}, got  # (lifted: shown serving)
    finally:
        if any(k["route"] == "iris" for k in fleet.api("GET", "/v1/status", ALICE)["kills"]):
            fleet.api("POST", "/v1/unkill", ALICE, body={"scope": "route", "route": "iris",
                                                          "reason": "done"})
        b.d.get(fleet.admin + "/ui/")
