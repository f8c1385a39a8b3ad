"""The operator console with route and version names that are JavaScript's own property
names (`__proto__`, `constructor`, `toString`), which the config allows (`[A-Za-z0-9_.-]+`),
in a real browser (Chromium driven by Selenium). Before: the status read by parts
(statusread.js) gathered the routes with `Object.assign`, whose assignment to `__proto__`
sets the object's prototype instead of adding a key, so a route named `__proto__` was never
drawn, silently: no card, no Kill button, no error, while every other route was shown.

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

pytestmark = pytest.mark.timeout(60)

BOB = admin_token("killgate:read killgate:kill", "bob", 10800)


async def test_a_route_named_like_a_javascript_property_gets_its_card(
        tmp_path: Path, backends, browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(p1, p2) + two_versions(p1, p2, name="__proto__",
                                                 prefix="/v2/models/proto")
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        b = browser

        def cards() -> list[str]:
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
