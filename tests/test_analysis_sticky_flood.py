"""One client must not decide a canary's verdict by flooding it through a sticky key.

A sticky route keeps a key on one version, and `x-killgate-version` tells a client which:
with a key that lands on the canary, one client sending many requests the canary fails
had a healthy canary rolled back, and one sending many cheap requests it answers diluted a
failing canary's error rate under the bound, so it passed (found by review of canary
analysis). `analysis.max_per_key` (default 10) counts only the first requests of each key
per window toward the verdict (domain/keyquota.py). End to end: a real `killgate serve`,
real backends, a hundred and twenty users with a key each and one flooding key."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.conftest import bearer, serving_process, two_versions
from tests.test_rules_pinned import INFER

pytestmark = pytest.mark.timeout(60)
READ = bearer("killgate:read", "t", 10800)
USERS = 120
ANALYSIS = ("sticky: {header: x-user-id}\n"
            "analysis: {window: 10s, interval: 200ms, min_requests: 30,"
            " max_error_rate_increase: 0.1, max_per_key: 3}\n")


def _model(name: str, fails_users: bool = False) -> web.Application:
    """Answers 500 to a malformed input (marked by a header); `fails_users`: also to one
    user in five (a canary with a real fault), never to a cheap prober's request."""

    async def infer(req: web.Request) -> web.Response:
        await req.read()
        user = req.headers.get("x-user-id", "")
        if req.headers.get("x-test-malformed") or (
                fails_users and user.startswith("user-") and int(user[5:]) % 5 == 0):
            return web.json_response({"error": "bad tensor"}, status=500)
        return web.json_response({"version": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


async def _send(s: ClientSession, url: str, headers: dict[str, str]) -> str:
    async with s.post(url + INFER, json={}, headers=headers) as r:
        await r.read()
        return r.headers["x-killgate-version"]


async def _analysis(s: ClientSession, admin: str) -> dict[str, Any]:
    async with s.get(admin + "/v1/status", headers=READ) as r:
        assert r.status == 200
        doc = await r.json()
    routes = doc["routes"]
    route = routes["iris"] if isinstance(routes, dict) else \
        next(x for x in routes if x.get("name") == "iris")
    return dict(route.get("analysis") or {})


@pytest.mark.parametrize("flood", ["errors", "cheap"])
async def test_one_flooding_sticky_key_cannot_decide_the_verdict(
        tmp_path: Path, backends, gateway_procs, flood: str) -> None:
    # errors: a healthy canary, flooded with requests it fails (would be rolled back);
    # cheap: a canary failing one user in five, flooded with requests it answers (would pass)
    p1 = await backends(_model("v1"))
    p2 = await backends(_model("v2", fails_users=flood == "cheap"))
    gw, _ = await serving_process(gateway_procs, tmp_path,
                                  two_versions(p1, p2, 50, 50, ANALYSIS))
    async with ClientSession() as s:
        attacker = None
        for i in range(200):  # a key the canary answers (x-killgate-version says which)
            if await _send(s, gw.url, {"x-user-id": f"mallory-{i}"}) == "v2":
                attacker = f"mallory-{i}"
                break
        assert attacker is not None
        extra = {"x-test-malformed": "1"} if flood == "errors" else {}
        sem = asyncio.Semaphore(16)

        async def one(headers: dict[str, str]) -> str:
            async with sem:
                return await _send(s, gw.url, headers)

        # the flood interleaved with the users' requests (two of its own to each of theirs)
        users = [{"x-user-id": f"user-{i}"} for i in range(USERS)]
        flood_ = [{"x-user-id": attacker, **extra}] * (2 * USERS)
        sent = [h for pair in zip(users, flood_[::2], flood_[1::2], strict=True) for h in pair]
        started = time.monotonic()
        served = await asyncio.gather(*(one(h) for h in sent))
        canary_users = sum(v == "v2" for h, v in zip(sent, served, strict=True)
                           if h["x-user-id"] != attacker)

        async def verdicts(done: Any) -> dict[str, Any]:
            while True:
                a = await _analysis(s, gw.admin)
                if done(a):
                    return a
                await asyncio.sleep(0.05)

        if flood == "cheap":
            # the canary fails one user in five: rolled back, whatever the flood answered
            a = await asyncio.wait_for(verdicts(lambda a: any(
                r["verdict"] == "failed" for r in a.get("recent", []))), 8)
            failed = next(r for r in a["recent"] if r["verdict"] == "failed")
            assert failed["evidence"]["canary"]["errors"] >= 5, failed
            return
        # not rolled back mid-flood: every flooding request was the canary's to the end
        assert {v for h, v in zip(sent, served, strict=True)
                if h["x-user-id"] == attacker} == {"v2"}
        assert canary_users >= 40, canary_users

        # a verdict of a round after the traffic ended, on all of it
        def after(a: dict[str, Any]) -> bool:
            last = (a.get("recent") or [{}])[0]
            n = last.get("evidence", {}).get("canary", {}).get("requests", 0)
            return bool(n >= canary_users and time.monotonic() - started > 0.5)

        a = await asyncio.wait_for(verdicts(after), 8)
    got = [r["verdict"] for r in a["recent"]]
    evidence = a["recent"][0]["evidence"]["canary"]
    assert "failed" not in got and got[0] == "passed", a["recent"][0]
    # the flooding key counted at most max_per_key a period (two periods at most)
    assert evidence["errors"] <= 6 and evidence["requests"] <= canary_users + 7, evidence


@pytest.mark.parametrize("way", ["path", "rewrite", "stream"])
async def test_a_keys_requests_past_its_bound_are_not_counted(
        tmp_path: Path, backends, way: str) -> None:
    """Both ways a version is chosen: by path alone, and version first when versions
    rewrite the body's `model` (dataplane/modelpeek.py); and a streamed answer's end."""
    from tests.backends import sse_app
    from tests.conftest import running_gateway, write_config

    app = (lambda n: sse_app(n, 2, 0.0)) if way == "stream" else _model
    p1, p2 = await backends(app("v1")), await backends(app("v2"))
    model = ", model: m-served" if way == "rewrite" else ""
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  sticky: {{header: x-user-id}}
  # (15m: the keys' periods are aligned to the window; a 60s one ended mid-test once in CI)
  analysis: {{window: 15m, interval: 1h, max_per_key: 3}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 0{model}}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 100{model}}}
""")
    async with running_gateway(cfg) as g, ClientSession() as s:
        for headers in [{"x-user-id": "alice"}] * 8 + [{"x-user-id": "bob"}] * 2 + [{}] * 4:
            async with s.post(g.url + INFER, json={"model": "m"}, headers=headers) as r:
                assert way != "stream" or r.content_type == "text/event-stream"
                assert r.status == 200 and r.headers["x-killgate-version"] == "v2"
                assert r.headers["x-killgate-decision"] == ("sticky" if headers else "weighted")
                await r.read()
        g.gw.rollout._held()  # (the "ok"s held back a second: handed over, as a round does)
        counts = g.gw.rollout.stats.window("iris", 60, time.time())
    # alice's first 3, bob's 2, and the 4 requests without a key (weighted: not bounded)
    assert counts["v2"].requests == 9, counts


@pytest.mark.parametrize("trusted", [False, True])
async def test_one_client_rotating_keys_is_bounded_by_max_per_client(
        tmp_path: Path, backends, trusted: bool) -> None:
    """A key each request defeats `max_per_key`; `max_per_client` bounds the address (behind
    admin.trusted_proxies, the client they vouch for: two clients there)."""
    from tests.conftest import running_gateway, write_config

    p1, p2 = await backends(_model("v1")), await backends(_model("v2"))
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  sticky: {{header: x-user-id}}
  # (15m: the keys' periods are aligned to the window; a 60s one ended mid-test once in CI)
  analysis: {{window: 15m, interval: 1h, max_per_key: 5, max_per_client: 4}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 0}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 100}}
""")
    if trusted:
        cfg.write_text(cfg.read_text().replace(
            "  auth:\n", "  trusted_proxies: [127.0.0.0/8]\n  auth:\n", 1))
    async with running_gateway(cfg) as g, ClientSession() as s:
        for i in range(10):
            headers = {"x-user-id": f"mallory-{i}",
                       "x-forwarded-for": f"198.51.100.{i % 2}"}
            async with s.post(g.url + INFER, json={}, headers=headers) as r:
                assert r.status == 200 and r.headers["x-killgate-version"] == "v2"
                await r.read()
        g.gw.rollout._held()
        counts = g.gw.rollout.stats.window("iris", 60, time.time())
    assert counts["v2"].requests == (8 if trusted else 4), counts
