"""OTLP metrics (telemetry/otlpmetrics.py, otlpconvert.py): the /metrics series converted to
OpenTelemetry's data model, and pushed to a real OTLP/HTTP collector by a running gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PCounter
from prometheus_client import Gauge as PGauge
from prometheus_client import Histogram as PHistogram

from gateway.telemetry.otlpconvert import to_metrics_data
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.otlp_collector import Collector, broken_collector
from tests.test_tracing import _fast_export  # noqa: F401 - the same clean OTEL_* env

INFER = "/v2/models/iris/infer"


def test_families_convert_to_sums_gauges_and_histograms() -> None:
    reg = CollectorRegistry()
    c = PCounter("killgate_things_total", "Things.", ["route"], registry=reg)
    c.labels("iris").inc(3)
    g = PGauge("killgate_level", "Level.", registry=reg)
    g.set(2.5)
    h = PHistogram("killgate_request_duration_seconds", "Durations.", ["route"],
                   buckets=(0.1, 1.0), registry=reg)
    for v in (0.05, 0.5, 0.7, 5.0):
        h.labels("iris").observe(v)
    data = to_metrics_data(reg.collect(), Resource.create({"service.name": "t"}), 1, 2)
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}

    things = metrics["killgate_things"]
    assert isinstance(things.data, Sum) and things.data.is_monotonic
    (p,) = things.data.data_points
    assert p.value == 3 and dict(p.attributes) == {"route": "iris"}
    assert p.start_time_unix_nano == 1 and p.time_unix_nano == 2

    level = metrics["killgate_level"]
    assert isinstance(level.data, Gauge) and level.data.data_points[0].value == 2.5

    dur = metrics["http.server.request.duration"]  # the semantic-convention name
    assert dur.unit == "s" and isinstance(dur.data, Histogram)
    (hp,) = dur.data.data_points
    assert list(hp.explicit_bounds) == [0.1, 1.0]
    assert list(hp.bucket_counts) == [1, 2, 1]  # per bucket, not cumulative
    assert hp.count == 4 and hp.sum == pytest.approx(6.25)


async def test_a_gateway_pushes_its_series_to_the_collector(
        tmp_path: Path, backends, session: ClientSession) -> None:
    collector = await Collector().start()
    try:
        p1 = await backends(echo_app("v1"))
        extra = (f"telemetry:\n  otlp_endpoint: {collector.url}\n"
                 "  traces: {sample_ratio: 0}\n  metrics: {export_interval: 1s}\n")
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=extra)
        async with running_gateway(cfg) as g:
            for _ in range(5):
                async with session.get(g.url + INFER) as r:
                    assert r.status == 200

            def answered() -> float:
                return sum(p["value"] for p in collector.metrics
                           if p["name"] == "killgate_requests"
                           and p["attributes"].get("route") == "iris")

            await wait_until(lambda: answered() >= 5, 10, 0.05, what="killgate_requests pushed")

            async def accepted() -> bool:
                async with session.get(g.admin + "/metrics") as r:
                    text = await r.text()
                return 'killgate_otel_exported_total{signal="metrics"} 0.0' not in text

            # a family with no series (the shadow ones without a shadow, the request series
            # before a request) went out as a metric with no data, which a strict receiver
            # refuses: every export failed (counted export_failed), none was accepted
            deadline = time.monotonic() + 10
            while not await accepted():
                assert time.monotonic() < deadline, f"no export accepted: {collector.empty}"
                await asyncio.sleep(0.05)
        assert collector.empty == []
        point = next(p for p in collector.metrics if p["name"] == "killgate_requests")
        assert point["kind"] == "sum" and point["monotonic"]
        assert point["resource"]["service.name"] == "killgate"
    finally:
        await collector.stop()


@pytest.mark.parametrize("mode", ["down", "stall", "fail"])
async def test_a_broken_collector_fails_no_request_and_lost_exports_are_counted(
        tmp_path: Path, backends, session: ClientSession, mode: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RELIABILITY row 59 for the metrics signal: with the collector refusing connections,
    never answering, or answering 500, requests keep succeeding, each lost export is
    counted, and the gateway still stops promptly."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    async with broken_collector(mode) as endpoint:
        p1 = await backends(echo_app("v1"))
        extra = (f"telemetry:\n  otlp_endpoint: {endpoint}\n"
                 "  traces: {sample_ratio: 0}\n  metrics: {export_interval: 1s}\n")
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=extra)
        async with running_gateway(cfg) as g:
            async def failed() -> float:
                async with session.get(g.admin + "/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith('killgate_otel_dropped_total{reason="export_failed",'
                                           'signal="metrics"}'):
                            return float(line.rsplit(" ", 1)[1])
                return 0.0

            deadline = time.monotonic() + 30
            while not await failed():
                assert time.monotonic() < deadline, "no failed metrics export counted"
                t0 = time.monotonic()
                async with session.get(g.url + INFER) as r:
                    assert r.status == 200
                # generous (a loaded machine): an export waited on would take 1 s or more
                assert time.monotonic() - t0 < 0.9, (mode, time.monotonic() - t0)
            t_stop = time.monotonic()
        # the last export on the way out is bounded (telemetry/otlpmetrics.LAST_EXPORT_WAIT)
        assert time.monotonic() - t_stop < 8, time.monotonic() - t_stop


async def test_the_pushed_inflight_gauge_counts_the_requests_in_flight(
        tmp_path: Path, backends) -> None:
    """killgate_inflight_requests was set only when Prometheus scraped /metrics: without a
    scrape (OTLP is for users without Prometheus) every export pushed 0, however many
    requests were in flight."""
    import asyncio

    from aiohttp import ClientSession as Session

    from tests.backends import hang_app

    collector = await Collector().start()
    try:
        p1 = await backends(hang_app())
        extra = (f"telemetry:\n  otlp_endpoint: {collector.url}\n"
                 "  traces: {sample_ratio: 0}\n  metrics: {export_interval: 1s}\n")
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=extra)
        async with running_gateway(cfg) as g, Session() as s:
            held = [asyncio.ensure_future(s.get(g.url + INFER)) for _ in range(3)]
            await wait_until(lambda: g.gw.inflight.count == 3, 10, what="3 in flight")
            start = len(collector.metrics)

            def pushed() -> list[float]:
                return [p["value"] for p in collector.metrics[start:]
                        if p["name"] == "killgate_inflight_requests"]

            await wait_until(pushed, 10, 0.05, what="an export after the requests came")
            assert pushed()[-1] == 3, pushed()
            for t in held:
                t.cancel()
            await asyncio.gather(*held, return_exceptions=True)
    finally:
        await collector.stop()


async def test_a_collection_that_fails_once_does_not_end_the_pushes(
        tmp_path: Path, backends, session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """A series source that raises (a bug) while the exporter collects: the push loop
    ended for good and no metric reached the collector again until a restart."""
    collector = await Collector().start()
    try:
        p1 = await backends(echo_app("v1"))
        extra = (f"telemetry:\n  otlp_endpoint: {collector.url}\n"
                 "  traces: {sample_ratio: 0}\n  metrics: {export_interval: 1s}\n")
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=extra)
        async with running_gateway(cfg) as g:
            broke: list[bool] = []

            class Once:  # a prometheus_client collector that fails its first collection
                def collect(self) -> list[object]:
                    if not broke:
                        broke.append(True)
                        raise RuntimeError("a source with a bug")
                    return []

            g.gw.metrics.registry.register(Once())  # type: ignore[arg-type]
            await wait_until(lambda: broke, 10, 0.05, what="the failing collection")
            collector.metrics.clear()
            async with session.get(g.url + INFER) as r:
                assert r.status == 200
            await wait_until(lambda: any(p["name"] == "killgate_requests"
                                         for p in collector.metrics), 10, 0.05,
                             what="a push after the failed one")
        assert any(r.getMessage() == "otlp_metrics_failed" for r in caplog.records)
    finally:
        await collector.stop()
