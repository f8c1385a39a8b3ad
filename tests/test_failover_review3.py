"""Failover, health and rollback on the data plane, a third hostile review (revfail3).
Each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app, serve_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"
ROLLOUT = "killgate:rollout killgate:read"


async def test_a_rollback_is_not_undone_when_the_version_rolled_back_to_goes_down(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """v2 (the file's stable) is bad: the operator rolls the route back to v1. v1 then
    goes down (its backend stops: connections refused). Its requests
    used to fail over to v2, the version just taken off, and once outlier detection ejected
    v1 ("another version can serve": v2) v2 took all the route's traffic, the rollback
    undone in silence, with `decision: failover`. A version taken to weight 0
    by a rollback is not one the route may fail over to: the route's fallback answers (README: when no
    version can serve), never v2."""
    bad = Recorder()
    p2 = await backends(echo_app("v2", bad))
    runner, p1 = await serve_app(echo_app("v1"))
    cfg = write_config(tmp_path, _route(
        "iris", {"v2": (p2, 100), "v1": (p1, 0)},
        "  outlier: {consecutive_gateway_failures: 2}\n"
        "  fallback: {status: 503, json: {busy: true}}\n"))
    try:
        async with running_gateway(cfg) as g:
            async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                    json={"to": "v1", "reason": "INC-1: v2 is bad"}) as r:
                assert r.status == 200, await r.text()
            async with session.post(g.url + INFER, data=b"{}") as r:
                assert (r.status, r.headers["x-killgate-version"]) == (200, "v1")
            await runner.cleanup()  # v1 goes down
            before = len(bad.requests)
            seen = []
            for _ in range(8):
                async with session.post(g.url + INFER, data=b"{}") as r:
                    await r.read()
                    seen.append((r.status, r.headers.get("x-killgate-version"),
                                 r.headers.get("x-killgate-decision")))
            assert len(bad.requests) == before, seen
            assert all(s[1] != "v2" for s in seen), seen
            assert seen[-1] == (503, None, "fallback"), seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["rollback", "auto_rollback"])
def test_the_version_a_rollback_took_off_is_no_spare(kind: str) -> None:
    """The routing core: with v1 (the version rolled back to, or the stable an automatic
    rollback kept) unhealthy, the version rolled off (v2: the failed canary, or the old
    stable, which the history calls the previous stable) takes nothing: the route's
    fallback. A `promote` (and `weights`) keep the previous known-good as the spare."""
    import dataclasses
    import random

    from gateway.domain.routing import FALLBACK
    from gateway.domain.statedoc import HistoryEntry, RouteOverride, StateDoc
    from gateway.domain.tablebuild import build_table
    from tests.test_routing import _cfg

    history = {"iris": (HistoryEntry("v2", "t0", "x", "r"), HistoryEntry("v1", "t1", "x", "r"))}
    ov = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "bob", "v2 bad", "t1", kind)
    doc = StateDoc(generation=2, overrides={"iris": ov}, history=history)
    plan = build_table(_cfg(50, 50), doc, unhealthy=frozenset({("iris", "v1")})).by_name["iris"]
    assert plan.choose(None, None, random.random).decision == FALLBACK
    assert plan.effective_weights() == {"v1": 0.0, "v2": 0.0}
    assert not plan.can_serve("v2")
    assert build_table(_cfg(50, 50), doc).by_name["iris"].failover_for("v1") == ()
    # a promote of v1 (v2 its previous stable, a known-good): v2 stays the spare
    doc = StateDoc(generation=2, overrides={"iris": dataclasses.replace(ov, kind="promote")},
                   history=history)
    plan = build_table(_cfg(50, 50), doc, unhealthy=frozenset({("iris", "v1")})).by_name["iris"]
    assert plan.effective_weights() == {"v1": 0.0, "v2": 100.0}


async def test_a_version_added_on_a_backend_checked_unhealthy_does_not_serve(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """README: "A new backend (at start, or added by a reload) is checked once before it
    serves." A reload adds route `other` whose version `x` is served by a backend that the
    running gateway already checks, and knows unhealthy (iris/v2: its readiness says 503).
    Its prober exists, so no first round was made for `x`: its record began optimistic
    (healthy) and `x` took every request of its route until `unhealthy_threshold` more
    checks had failed (here a minute each). Expected: `x` starts with what the checks of
    its backend say: out, the route answers 503 `unavailable`."""
    from aiohttp import web

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=503, text="loading")

    down = web.Application()
    down.router.add_get("/ready", ready)
    down.router.add_route("*", "/{tail:.*}", ready)
    p1, p2 = await backends(echo_app("v1")), await backends(down)
    health = "  health: {path: /ready, interval: 60s, timeout: 1s}\n"
    iris = _route("iris", {"v1": (p1, 50), "v2": (p2, 50)}, health)
    cfg = write_config(tmp_path, iris)
    async with running_gateway(cfg) as g:
        assert ("iris", "v2") in g.gw.holder.unhealthy
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, iris + _route("other", {"x": (p2, 100)}, health),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10)
        async with session.get(g.url + "/v2/models/other/infer") as r:
            body = await r.json()
            assert (r.status, r.headers.get("x-killgate-version")) == (503, None), body
            assert body["error"]["type"] == "unavailable", body
        assert ("other", "x") in g.gw.holder.unhealthy


@pytest.mark.parametrize(("method", "headers", "again"), [
    ("POST", {}, False),
    ("POST", {"Idempotency-Key": "k1"}, True),
    ("GET", {}, True),
])
async def test_an_answer_cut_after_its_head_is_not_retried_unless_safe_to_send_twice(
        tmp_path: Path, backends, session: ClientSession, method: str,
        headers: dict[str, str], again: bool) -> None:
    """`retry_on: [reset]` retries a request whose backend closed or reset before it
    answered (Envoy's `reset`: "does not respond at all"). v1 answers `200 OK` with a
    Content-Length of 100 and closes after 7 bytes: it processed the request, and said so.
    That POST was sent again to v2 (processed twice: a charge, a write), and the client
    got v2's 200 as if nothing had happened. Expected: a 502 for it; a request safe to
    send twice (an idempotent method, an Idempotency-Key) is still retried."""
    import asyncio

    from tests.backends import RawServer

    class Cut(RawServer):
        """Answers a connection's first request whole (kept alive), cuts the second."""

        requests = 0

        async def serve(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
            for answer in (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                           b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"):
                head = await reader.readuntil(b"\r\n\r\n")
                length = [int(x.split(b":")[1]) for x in head.lower().split(b"\r\n")
                          if x.startswith(b"content-length:")]
                await reader.readexactly(length[0] if length else 0)
                self.requests += 1
                writer.write(answer)
                await writer.drain()

    cut = Cut()
    p1 = await cut.start()
    second = Recorder()
    p2 = await backends(echo_app("v2", second))
    cfg = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)},
                                        "  retry: {retry_on: [reset], attempts: 2}\n"
                                        "  outlier: {enabled: false}\n"))
    try:
        async with running_gateway(cfg) as g:
            async with session.post(g.url + INFER, data=b"{}") as r:  # (pooled after)
                assert (r.status, await r.read()) == (200, b"ok")
            async with session.request(method, g.url + INFER, data=b"{}",
                                       headers=headers) as r:
                body = await r.read()
                got = (r.status, r.headers.get("x-killgate-version"))
            assert cut.requests == 2
            if again:
                assert got == (200, "v2") and len(second.requests) == 1, (got, body)
            else:
                assert got == (502, "v1"), (got, body)
                assert second.requests == [], "a POST v1 answered 200 was sent to v2 too"
    finally:
        await cut.stop()


async def test_a_passively_ejected_version_serves_again_when_nothing_else_can(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """README: "Passive ejection never removes the last version that can serve." It was
    checked only at the moment of the ejection: v1 answered a few 5xx (a blip) and was
    ejected for 30 s while v2 served; then the operator killed v2 (a bad model). Nothing
    could serve, and the route answered 503 `unavailable` for the rest of the ejection (up
    to 300 s after repeated ones), though v1 had recovered and nothing but its ejection
    held it out. Expected: a version out only by passive ejection is back as soon as no
    other version can serve (as Envoy's max_ejection_percent counts what is out now)."""
    from aiohttp import web

    from tests.test_killswitch import kill

    blip = {"on": True}

    async def flaky(_: web.Request) -> web.Response:
        if blip["on"]:
            return web.Response(status=500, text="blip")
        return web.json_response({"version": "v1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky)
    p1, p2 = await backends(app), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _route("iris", {"v1": (p1, 50), "v2": (p2, 50)},
                                        "  outlier: {consecutive_5xx: 2, base_ejection: 30s}\n"))
    async with running_gateway(cfg) as g:
        for _ in range(50):
            async with session.post(g.url + INFER, headers={"x-n": "1"}, data=b"{}") as r:
                await r.read()
            if ("iris", "v1") in g.gw.holder.unhealthy:
                break
        assert ("iris", "v1") in g.gw.holder.unhealthy
        blip["on"] = False  # v1 recovers; its ejection runs on
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        await wait_until(lambda: g.gw.holder.table.by_name["iris"].excluded.get("v2")
                         == "killed")
        async with session.post(g.url + INFER, data=b"{}") as r:
            body = await r.read()
            assert (r.status, r.headers.get("x-killgate-version")) == (200, "v1"), body
        # /v1/status says v1 is healthy (it serves, its checks pass): it said `healthy:
        # false` beside its 100 % while its ejection ran on (the detail keeps the ejection)
        async with session.get(g.admin + "/v1/status", headers=auth("killgate:read")) as r:
            v1 = (await r.json())["routes"]["iris"]["versions"]["v1"]
        assert v1["healthy"] and v1["effective_weight"] == 100.0, v1
        assert v1["health"]["ejected_for_s"] > 0, v1


def test_only_a_version_out_by_ejection_alone_is_taken_back() -> None:
    """The routing core of the test above: with every version out, those out only by
    passive ejection serve; one out by its failed checks is never forced back in (README)."""
    import random

    from gateway.domain.routing import FALLBACK
    from gateway.domain.statedoc import StateDoc
    from gateway.domain.tablebuild import build_table
    from tests.test_routing import _cfg

    out = frozenset({("iris", "v1"), ("iris", "v2")})
    plan = build_table(_cfg(), StateDoc(), out, ejected=frozenset({("iris", "v2")})) \
        .by_name["iris"]
    assert plan.effective_weights() == {"v1": 0.0, "v2": 100.0}
    assert plan.choose(None, None, random.random).target.name == "v2"
    plan = build_table(_cfg(), StateDoc(), out).by_name["iris"]
    assert plan.choose(None, None, random.random).decision == FALLBACK
    # while another version serves, an ejection holds
    plan = build_table(_cfg(), StateDoc(), frozenset({("iris", "v2")}),
                       ejected=frozenset({("iris", "v2")})).by_name["iris"]
    assert plan.effective_weights() == {"v1": 100.0, "v2": 0.0}


async def test_a_reload_does_not_bring_back_the_version_it_removes_while_it_checks_new_ones(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A reload removes v2 (out: its checks fail) and adds v3, whose first check takes a
    second; the running table (the old config) serves meanwhile. The health records of v2
    were deleted before that check, so anything that published health during it (another
    version ejected, an ejection ending, a check changing) gave the old table a v2 with no
    record: healthy, and it took its share of traffic until the new config went live.
    Expected: nothing the old table routes changes health by the reload's bookkeeping."""
    import asyncio

    from aiohttp import web

    async def bad_ready(_: web.Request) -> web.Response:
        return web.Response(status=503, text="broken")

    async def slow_ready(_: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="ok")

    broken = Recorder()
    v3 = web.Application()
    v3.router.add_get("/ready", slow_ready)
    p1, p3 = await backends(echo_app("v1")), await backends(v3)
    v2_app = web.Application()
    v2_app.router.add_get("/ready", bad_ready)
    v2_app.add_subapp("/v2/", echo_app("v2", broken))
    p2 = await backends(v2_app)
    health = "  health: {path: /ready, interval: 60s, timeout: 2s}\n"
    cfg = write_config(tmp_path, _route("iris", {"v1": (p1, 50), "v2": (p2, 50)}, health))
    async with running_gateway(cfg) as g:
        assert ("iris", "v2") in g.gw.holder.unhealthy
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, _route("iris", {"v1": (p1, 50), "v3": (p3, 50)},
                                                     health), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: any(k == ("iris", "v3") for k in g.gw.health.records), 10)
        assert g.gw.loaded.digest == old  # (v3's first check is under way)
        g.gw.health._publish()  # (what an ejection, or its end, does meanwhile)
        assert ("iris", "v2") in g.gw.holder.unhealthy
        for _ in range(10):
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
        assert broken.requests == []
        await wait_until(lambda: g.gw.loaded.digest != old, 10)


async def test_status_names_no_previous_known_good_the_route_was_rolled_back_off(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """After a rollback from v2 to v1, `/v1/status` said `previous_known_good: v2` (the
    history's stable before v1): the version just rolled off, called known good to an
    operator reading the status, and the default a rollback drill rolls back to. It is
    no spare of the route (above), and the status says there is none."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _route("iris", {"v2": (p2, 100), "v1": (p1, 0)}))
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v1", "reason": "INC-1: v2 is bad"}) as r:
            assert r.status == 200, await r.text()
        async with session.get(g.admin + "/v1/status", headers=auth(ROLLOUT)) as r:
            route = (await r.json())["routes"]["iris"]
        assert route["stable"] == "v1"
        assert route["previous_known_good"] is None, route["previous_known_good"]
