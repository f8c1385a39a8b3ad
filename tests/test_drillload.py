"""A drill's HTTP (control/drillload.py) against real loopback servers: the admin client's
retries, the paced traffic, and the abort watch reading /metrics."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillabort import ErrorWatch, route_counts
from gateway.control.drillload import AdminClient, DrillApiError, Probe, Traffic
from tests.backends import echo_app
from tests.conftest import free_port

METRICS = """# HELP killgate_requests_total Requests answered by the data plane.
# TYPE killgate_requests_total counter
killgate_requests_total{code="200",decision="weighted",route="iris",version="v1"} 90.0
killgate_requests_total{code="502",decision="weighted",route="iris",version="v2"} 7.0
killgate_requests_total{code="503",decision="killed",route="iris",version=""} 3.0
killgate_requests_total{code="500",decision="weighted",route="other",version="v1"} 50.0
"""


def test_route_counts_takes_failures_but_not_kills() -> None:
    assert route_counts(METRICS, "iris") == (100.0, 7.0)
    assert route_counts(METRICS, "nope") == (0.0, 0.0)
    assert route_counts("garbage\n{}", "iris") == (0.0, 0.0)


async def test_admin_client_retries_503_with_the_same_key_and_not_409(backends) -> None:
    keys: list[str] = []

    async def flaky(req: web.Request) -> web.Response:
        keys.append(req.headers["idempotency-key"])
        if len(keys) < 3:
            return web.json_response({"error": {"type": "state_store_unavailable",
                                                "message": "later"}}, status=503)
        return web.json_response({"ok": True})

    async def conflict(req: web.Request) -> web.Response:
        return web.json_response({"error": {"type": "drill_in_progress", "message": "no"}},
                                 status=409)

    busy: list[str] = []

    async def applying(req: web.Request) -> web.Response:
        busy.append(req.headers["idempotency-key"])  # (the first try's answer was lost)
        if len(busy) < 3:
            return web.json_response({"error": {"type": "in_progress", "message": "a "
                                                "request with this Idempotency-Key is still "
                                                "being applied"}}, status=409)
        return web.json_response({"undone": []})

    app = web.Application()
    app.router.add_post("/flaky", flaky)
    app.router.add_post("/conflict", conflict)
    app.router.add_post("/applying", applying)
    port = await backends(app)
    async with ClientSession() as s:
        api = AdminClient(s, f"http://127.0.0.1:{port}/", "tok")
        assert await api.call("POST", "/flaky", {"reason": "r"}, retry_for=5) == {"ok": True}
        assert len(keys) == 3 and len(set(keys)) == 1
        with pytest.raises(DrillApiError) as e:
            await api.call("POST", "/conflict", {}, retry_for=5)
        assert e.value.status == 409 and e.value.type == "drill_in_progress"
        # an earlier try still being applied: tried again with its key, not given up
        assert await api.call("POST", "/applying", {}, retry_for=5) == {"undone": []}
        assert len(busy) == 3 and len(set(busy)) == 1
        dead = AdminClient(s, f"http://127.0.0.1:{free_port()}", None)
        t0 = time.monotonic()
        with pytest.raises(DrillApiError) as e:
            await dead.call("GET", "/v1/status", retry_for=0.5)
        assert e.value.status == 0 and "cannot reach" in str(e.value)
        assert 0.4 < time.monotonic() - t0 < 5


async def test_admin_client_never_follows_a_redirect(backends) -> None:
    seen: list[str | None] = []

    async def moved(req: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(req: web.Request) -> web.Response:
        seen.append(req.headers.get("Authorization"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/drills", moved)
    app.router.add_post("/elsewhere", elsewhere)
    port = await backends(app)
    async with ClientSession() as s:
        api = AdminClient(s, f"http://127.0.0.1:{port}", "secret-token")
        with pytest.raises(DrillApiError) as e:
            await api.call("POST", "/v1/drills", {"reason": "r"}, retry_for=5)
    assert (e.value.status, e.value.type) == (302, "redirect")
    assert "/elsewhere" in str(e.value) and "secret-token" not in str(e.value)
    assert seen == []  # the token went nowhere else


async def test_traffic_is_paced_per_instance_and_records_failures(backends) -> None:
    port = await backends(echo_app("v1", extra_headers={"x-killgate-version": "v1",
                                                        "x-killgate-decision": "weighted"}))
    live, dead = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{free_port()}"
    async with ClientSession() as s:
        t = Traffic(s, [live, dead], Probe("GET", "/x", {"h": "1"}), 40, time.monotonic())
        task = asyncio.create_task(t.run())
        t0 = time.monotonic()
        await asyncio.sleep(0.5)  # (a window of time to count what was sent in it)
        await t.drain()
        took = time.monotonic() - t0
        await task
    mine = [o for o in t.obs if o.instance == live]
    # 40 a second: ~20 in the window, never a burst beyond the pace (a loaded machine can
    # stall the sender, which then goes on without catching up, so fewer is allowed)
    assert 5 <= len(mine) <= took * 40 + 2, (len(mine), took)
    assert all((o.status, o.version, o.decision) == (200, "v1", "weighted") for o in mine)
    sent = sorted(o.sent for o in mine)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    # the pace between sends (the median: a stall is one long gap, not a slower pace)
    assert statistics.median(gaps) == pytest.approx(0.025, abs=0.006), gaps
    assert all(o.status == 0 for o in t.obs if o.instance == dead)


async def test_error_watch_aborts_on_users_errors_only(backends) -> None:
    counts = {"ok": 0.0, "bad": 0.0}

    async def metrics(req: web.Request) -> web.Response:
        return web.Response(text=(
            f'killgate_requests_total{{code="200",decision="weighted",route="iris",'
            f'version="v1"}} {counts["ok"]}\n'
            f'killgate_requests_total{{code="502",decision="weighted",route="iris",'
            f'version="v1"}} {counts["bad"]}\n'))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    url = f"http://127.0.0.1:{await backends(app)}"
    own = {"total": 0, "errors": 0}
    reasons: list[str] = []
    async with ClientSession() as s:
        watch = ErrorWatch(s, [url], "iris", lambda: {"d": (own["total"], own["errors"])}, 0.1, 10,
                           0.02, window=5)
        task = asyncio.create_task(watch.run(reasons.append))
        await asyncio.sleep(0.1)
        # the drill's own failing requests: subtracted, no abort
        for _ in range(10):
            counts["bad"] += 5
            own["total"] += 5
            own["errors"] += 5
            counts["ok"] += 20
            await asyncio.sleep(0.03)
        assert not reasons and not task.done()
        counts["bad"] += 30  # users now see 30 failures among ~230 answers
        await asyncio.wait_for(task, 2)
    assert reasons and "error rate on route 'iris'" in reasons[0], reasons
    assert watch.worst > 0.1


async def test_error_watch_notes_unreadable_metrics(backends) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with ClientSession() as s:
        watch = ErrorWatch(s, [dead], "iris", dict, 0.1, 10, 0.01)
        task = asyncio.create_task(watch.run(lambda why: None))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert watch.unreadable == {dead}




async def test_the_wait_for_heartbeats_is_bounded_and_ends_at_ctrl_c(backends) -> None:
    """control/drillrejoin.wait_rejoined (a store-loss drill, after its outage, before its
    restore) against an admin API whose /v1/status does not answer: one call waited the
    client's 35 s, past the wait's bound and through a Ctrl-C, the drill's kill in force
    all the while (its restore comes after this wait). Now the bound ends the call, and a
    stop ends the wait at once."""
    from gateway.control.drillrejoin import wait_rejoined

    hung = asyncio.Event()

    async def status(req: web.Request) -> web.Response:
        await hung.wait()  # (never set: the answer never comes)
        return web.json_response({"instances": {}})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    port = await backends(app)
    async with ClientSession() as s:
        api = AdminClient(s, f"http://127.0.0.1:{port}", "tok")
        t0 = time.monotonic()
        got = await asyncio.wait_for(wait_rejoined(api, ["a"], 1.0, 0.4, asyncio.Event()), 3)
        assert got == ["a"] and 0.35 < time.monotonic() - t0 < 1.5
        stopped = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stopped.set)
        t0 = time.monotonic()
        got = await asyncio.wait_for(wait_rejoined(api, ["a"], 1.0, 30.0, stopped), 3)
        assert got == ["a"] and time.monotonic() - t0 < 1.0


async def test_a_slow_status_answer_does_not_pass_an_old_heartbeat_for_a_new_one(
        backends) -> None:
    """wait_rejoined tells a heartbeat from after the outage by its age (`seen_s_ago`, the
    store's clock) against the time since the outage plus half of it: that time was taken
    when the answer came, so an answer 0.6 s slow let a heartbeat made just before a 1 s
    outage pass for a new one (the wait skipped, the restore's receipt then short). It is
    now the time as of the call's start, before the ages were taken."""
    from gateway.control.drillrejoin import wait_rejoined

    end = time.monotonic()  # (the outage ended now)

    async def status(req: web.Request) -> web.Response:
        # a heartbeat made 50 ms before the 1 s outage began, aged as of now
        body = {"instances": {"a": {"seen_s_ago": time.monotonic() - end + 1.05}}}
        await asyncio.sleep(0.6)  # (the answer is slow to come)
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v1/status", status)
    port = await backends(app)
    async with ClientSession() as s:
        api = AdminClient(s, f"http://127.0.0.1:{port}", "tok")
        got = await asyncio.wait_for(wait_rejoined(api, ["a"], 1.0, 1.0, asyncio.Event()), 3)
    assert got == ["a"], "a heartbeat from before the outage was taken for a new one"
