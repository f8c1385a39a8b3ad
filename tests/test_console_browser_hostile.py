"""The operator console given values its writers chose, in a real browser (Chromium driven
by Selenium).

- A route named `__proto__`, which the config allows (`[A-Za-z0-9_.-]+`). Before: the
  status read by parts (statusread.js) gathered the routes with `Object.assign`, whose
  assignment to `__proto__` sets the object's prototype instead of adding a key, so the
  route was never drawn, silently: no card, no Kill button, no error.
- A drill's summary, which any killgate:drill principal writes (`POST /v1/drills/{id}/end`)
  as any JSON object: a value JavaScript cannot turn into text (`{"toString": 0}`) threw
  in the drills panel, and the whole history was replaced by "TypeError: Cannot convert
  object to primitive value" for as long as that drill was among the newest.

A real in-process gateway (the code of `killgate serve`); the browser runs in a thread
while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config
from tests.console_rig import Browser
from tests.drillrig import call
from tests.drillrig import routes as drill_routes

pytestmark = pytest.mark.timeout(60)

BOB = admin_token("killgate:read killgate:kill", "bob", 10800)


async def test_a_route_named_like_a_javascript_property_gets_its_card(
        tmp_path: Path, backends, session, browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(p1, p2) + two_versions(p1, p2, name="__proto__",
                                                 prefix="/v2/models/proto")
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        b = browser

        def cards() -> tuple[list[str], int]:
            b.quick_rounds()
            b.sign_in(g.admin, BOB, "bob")
            b.wait(lambda d: "Kill v2" in b.text("#routes-body"), "the routes drawn",
                   seen="#routes-body")
            # (a few rounds: a card missing at the first is missing for good)
            b.wait(lambda d: d.execute_script(
                "return document.querySelectorAll('#routes-body article.route').length") >= 2,
                "both route cards drawn", seen="#routes-body", timeout=10)
            names = b.d.execute_script(
                "return [...document.querySelectorAll('#routes-body article.route')]"
                ".map((a) => a.dataset.route)")
            # nothing changes: after the first rounds no route is asked for again
            b.wait(lambda d: d.execute_script("return window.__kgQuickRounds") >= 3,
                   "three rounds")
            parts = ("return performance.getEntriesByType('resource')"
                     ".filter((e) => e.name.includes('&routes=')).length")
            before, rounds = b.d.execute_script(parts), b.d.execute_script(
                "return window.__kgQuickRounds")
            b.wait(lambda d: d.execute_script("return window.__kgQuickRounds") >= rounds + 3,
                   "three more rounds")
            return names, b.d.execute_script(parts) - before

        drawn, asked = await asyncio.to_thread(cards)
        assert sorted(drawn) == ["__proto__", "iris"], drawn
        assert asked == 0, f"routes asked for again in 3 unchanged rounds: {asked} read(s)"
        # a kill on iris: only iris's part is read again (`__proto__`'s tag was lost as its
        # part was, and it was read at every change of the index)
        async with session.post(g.admin + "/v1/kill?wait=2s", headers={
                "Authorization": f"Bearer {BOB}"}, json={
                "scope": "version", "route": "iris", "version": "v2", "reason": "r"}) as r:
            assert r.status == 200, await r.text()

        def after_kill() -> list[str]:
            b.wait(lambda d: "Unkill v2" in b.text("article[data-route='iris']"),
                   "the kill drawn", seen="#routes-body")
            return b.d.execute_script(
                "return performance.getEntriesByType('resource').map((e) => e.name)"
                ".filter((n) => n.includes('&routes='))")

        reads = await asyncio.to_thread(after_kill)
        assert reads and "__proto__" not in reads[-1], reads


async def test_a_drill_summary_the_page_cannot_print_leaves_the_history_shown(
        tmp_path: Path, backends, session, browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, drill_routes(p1, p2))) as g:
        a = g.admin
        for summary in ({"leaks": 0, "errors": 0, "time_to_kill_ms": {"max": 12.5}},
                        {"leaks": {"toString": 0}, "errors": {"valueOf": 1, "toString": 2},
                         "time_to_kill_ms": {"p50": {"toString": 0}, "max": "[]"}}):
            st, out = await call(session, "POST", f"{a}/v1/drills",
                                 {"kind": "kill", "route": "iris-drill", "version": "v2",
                                  "reason": "monthly rehearsal"})
            assert st == 200, out
            st, out = await call(session, "POST", f"{a}/v1/drills/{out['drill']}/end",
                                 {"verdict": "aborted", "reason": "r", "summary": summary})
            assert st == 200, out
        b = browser

        def history() -> str:
            b.quick_rounds()
            b.sign_in(a, BOB, "bob")
            b.wait(lambda d: (
                "aborted" in b.text("#drills-body") or "TypeError" in b.text("#drills-body")),
                "the drill history", seen="#drills")
            return b.text("#drills-body")

        shown = await asyncio.to_thread(history)
        assert "TypeError" not in shown, shown
        assert shown.count("aborted") == 2, shown  # (both drills, the genuine one too)
        assert "max 13 ms" in shown, shown
        assert '{"toString":0}' in shown, shown  # (what was sent, as its JSON)
