"""Active health checks against backends that misbehave, from a hostile review
(revfailover). Each failed before its fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.configfile import load_config
from gateway.control.probes import HealthMonitor
from gateway.control.table import TableHolder
from gateway.telemetry.metrics import Metrics
from tests.backends import StreamingBackend, echo_app, hang_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[HealthMonitor]:
    """A started monitor (its probe session) for a route without health checks: the test
    probes URLs of its own through it."""
    cfg = load_config(write_config(tmp_path, two_versions(1, 2)))
    health = HealthMonitor(TableHolder(cfg), Metrics())
    await health.start()
    try:
        yield health
    finally:
        await health.stop()


async def test_a_health_answer_with_a_huge_body_is_not_read_whole(
        monitor: HealthMonitor) -> None:
    """A health path that answers 200 with an endless (or 1 GiB) body, say a `path` set to
    a download by mistake: the probe read it all into memory, every interval, until its
    timeout. Only its status decides: at most a small part of the body is read."""
    backend = StreamingBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n",
                               b"x" * 65536, 1 << 30)
    port = await backend.start()
    try:
        ok, err = await monitor.client.check(f"http://127.0.0.1:{port}/health", 5.0)
        assert ok, err
        assert backend.sent < 16 << 20, f"the probe read {backend.sent >> 20} MiB"
    finally:
        await backend.stop()


async def test_hung_backends_do_not_fail_the_probes_of_healthy_ones(
        monitor: HealthMonitor, backends) -> None:
    """The probe session's connection limit (64) was shared by every prober of the process:
    64 backends whose health checks hang (one host down for many models) held every
    connection until their timeouts, and a healthy backend's probe waited for one and
    failed, so enough rounds of it marked healthy versions out (a wider outage)."""
    hung = await backends(hang_app())

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", ok)
    healthy = await backends(app)
    stuck = [asyncio.ensure_future(monitor.client.check(f"http://127.0.0.1:{hung}/h{i}", 5.0))
             for i in range(64)]
    try:
        await asyncio.sleep(0.2)  # (they all hold a connection now)
        result = await monitor.client.check(f"http://127.0.0.1:{healthy}/health", 1.0)
        assert result == (True, None)
    finally:
        for t in stuck:
            t.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


async def test_a_backend_failing_its_first_health_round_gets_no_traffic(tmp_path: Path,
                                                                       backends) -> None:
    """New backends get one health round before they serve (README, Config changes; a
    version's record is "optimistic until the first round says otherwise"). With the
    default thresholds that round could not say otherwise: one failed check is below
    `unhealthy_threshold`, so a version whose model is still loading (its readiness 503)
    took its share of traffic at start and after a reload until enough rounds failed.
    Expected: the first round decides (Envoy's new hosts, too, wait for a first pass)."""
    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=503, text="loading")

    async def infer(_: web.Request) -> web.Response:
        return web.Response(status=503, text="model is loading")

    down = web.Application()
    down.router.add_get("/ready", ready)
    down.router.add_route("*", "/{tail:.*}", infer)
    p1 = await backends(echo_app("v1"))
    p2 = await backends(down)
    cfg = write_config(tmp_path, two_versions(
        p1, p2, 50, 50, "health: {path: /ready, interval: 60s, timeout: 1s}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        served = []
        for _ in range(20):
            async with session.post(g.url + "/v2/models/iris/infer", data=b"{}") as r:
                await r.read()
                served.append((r.status, r.headers.get("x-killgate-version")))
    assert set(served) == {(200, "v1")}, served


async def test_passing_active_checks_readmit_a_passively_ejected_version(
        tmp_path: Path, backends) -> None:
    """README (Health): outlier detection ejects a version for 30 s x its ejections;
    "passing active checks re-admit it" (RELIABILITY row 1: "probe re-admits"; Envoy's
    `successful_active_health_check_uneject_host`). Only a version out by its checks was
    re-admitted by them: one ejected by real traffic whose checks kept passing stayed out
    for the whole ejection. Expected: `healthy_threshold` passes after the ejection bring it
    back."""
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def infer(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    flaky = web.Application()
    flaky.router.add_get("/health", health)
    flaky.router.add_route("*", "/{tail:.*}", infer)
    p1 = await backends(flaky)
    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(
        p1, p2, 50, 50, "health: {path: /health, interval: 200ms, timeout: 150ms, "
        "healthy_threshold: 2}\noutlier: {consecutive_5xx: 2, base_ejection: 30s}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        async def ejected() -> bool:
            async with session.post(g.url + "/v2/models/iris/infer", data=b"{}") as r:
                await r.read()
            return ("iris", "v1") in g.gw.holder.unhealthy

        for _ in range(100):
            if await ejected():
                break
        assert ("iris", "v1") in g.gw.holder.unhealthy
        await wait_until(lambda: ("iris", "v1") not in g.gw.holder.unhealthy, 5)
