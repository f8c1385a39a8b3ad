"""OTLP metrics: the same series as /metrics, pushed to an OTLP collector every interval.

Owns `OtlpMetrics`, an async context manager: every `export_interval` it collects the
Prometheus registry's families on the event loop (as a scrape does: the request path pays
nothing extra), converts them to OpenTelemetry's metric data model on a daemon thread —
counters as cumulative monotonic sums (the `_total` suffix dropped, as OpenTelemetry names
them), gauges as gauges, histograms with per-bucket counts — and exports them with the OTLP
HTTP/protobuf exporter there. One export at a time: a slow collector delays the next round,
never queues them. A last export runs on the way out (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as PromFamily

from gateway.log import event
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otelcommon import (
    accepted_only_2xx,
    export_counts,
    in_daemon_thread,
    resource,
)
from gateway.telemetry.otelenv import OtelSettings

__all__ = ["OtlpMetrics", "to_metrics_data"]

log = logging.getLogger("killgate.telemetry")
LAST_EXPORT_WAIT = 5.0
# series that are an OpenTelemetry semantic-convention instrument go out under its name
SEMCONV = {"killgate_request_duration_seconds": "http.server.request.duration"}
_UNITS = (("_seconds", "s"), ("_bytes", "By"))


def _unit(name: str) -> str:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _histogram(fam: PromFamily, start: int, now: int) -> list[HistogramDataPoint]:
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        point = series.setdefault(key, {"buckets": [], "count": 0, "sum": 0.0})
        if s.name.endswith("_bucket"):
            point["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            point["count"] = int(s.value)
        elif s.name.endswith("_sum"):
            point["sum"] = s.value
    out = []
    for key, p in series.items():
        cumulative = sorted(p["buckets"])
        bounds = [le for le, _ in cumulative if not math.isinf(le)]
        counts, prev = [], 0.0
        for _, c in cumulative:
            counts.append(int(c - prev))
            prev = c
        if not cumulative or not math.isinf(cumulative[-1][0]):
            counts.append(int(p["count"] - prev))  # (the +Inf bucket)
        out.append(HistogramDataPoint(dict(key), start, now, p["count"], p["sum"], counts,
                                      bounds, None, None))  # type: ignore[arg-type]
    return out


def _metric(fam: PromFamily, start: int, now: int) -> Metric | None:
    name = SEMCONV.get(fam.name, fam.name)
    unit = _unit(fam.name)
    if fam.type == "histogram":
        return Metric(name, fam.documentation, unit, Histogram(
            _histogram(fam, start, now), AggregationTemporality.CUMULATIVE))
    if fam.type == "counter":
        points = [NumberDataPoint(dict(s.labels), start, now, _number(s.value))
                  for s in fam.samples if s.name.endswith("_total")]
        return Metric(name, fam.documentation, unit, Sum(
            points, AggregationTemporality.CUMULATIVE, is_monotonic=True))
    if fam.type in ("gauge", "unknown"):
        points = [NumberDataPoint(dict(s.labels), start, now, _number(s.value))
                  for s in fam.samples]
        return Metric(name, fam.documentation, unit, Gauge(points))
    return None  # info, stateset, summary: nothing killgate exports


def to_metrics_data(families: Iterable[PromFamily], res: Resource, start_ns: int,
                    now_ns: int, version: str = "") -> MetricsData:
    # (a family with no series, as the shadow ones without a shadow or the request series
    # before a request, is left out: a metric without data points is encoded with no data
    # at all, which a strict receiver refuses, the whole batch with it)
    metrics = [m for m in (_metric(f, start_ns, now_ns) for f in families)
               if m is not None and m.data.data_points]
    scope = InstrumentationScope("killgate", version or None)
    return MetricsData([ResourceMetrics(res, [ScopeMetrics(scope, metrics, "")], "")])


class OtlpMetrics:
    def __init__(self, settings: OtelSettings | None, collect: Callable[[], Iterable[PromFamily]],
                 instance: str = "", version: str = "") -> None:
        self.settings = settings
        self.collect = collect
        self.instance = instance
        self.version = version
        self.exported = 0
        self.dropped = {"export_failed": 0}
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # an export is running (on its thread)
        self._exporter: Any = None
        self._resource: Resource | None = None
        self._start = time.time_ns()

    @property
    def enabled(self) -> bool:
        return self._exporter is not None

    def register(self, metrics: Metrics) -> None:
        if not self.enabled:
            return

        export_counts(metrics, "metrics", lambda: (self.exported, self.dropped))

    async def __aenter__(self) -> OtlpMetrics:
        s = self.settings
        if s is None or s.metrics_endpoint is None:
            return self
        try:  # (the exporter imports the SDK's trace side, which reads OTEL_SPAN_*_LIMIT
            # and the like when imported and raises on a value it refuses)
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            exporter = OTLPMetricExporter(endpoint=s.metrics_endpoint)
        except Exception as exc:  # noqa: BLE001 - a side channel: the gateway runs without it
            event(log, "otlp_metrics_off", logging.ERROR, endpoint=s.metrics_endpoint,
                  error=f"{type(exc).__name__}: {exc}",
                  consequence="no metrics are pushed over OTLP (/metrics still answers)",
                  hint="fix or unset the OTEL_* variable the error names, then restart")
            return self
        self._exporter = exporter
        accepted_only_2xx(self._exporter, "metrics")
        self._resource = resource(s, self.instance, self.version)
        self._task = asyncio.create_task(self._run(s.export_interval), name="otlp-metrics")
        event(log, "otlp_metrics", endpoint=s.metrics_endpoint, interval_s=s.export_interval)
        return self

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.export_once()
            except Exception as exc:  # noqa: BLE001 - one broken collection (a bug in a
                # source) must not end the pushes for good: counted, logged, and the next
                # interval collects again
                self.dropped["export_failed"] += 1
                event(log, "otlp_metrics_failed", logging.ERROR, exc=exc)

    async def export_once(self) -> bool:
        """Collect now (on the loop), convert and export off it; True when accepted."""
        families = list(self.collect())
        res, start, version, exporter = self._resource, self._start, self.version, self._exporter
        assert res is not None and exporter is not None

        def export() -> bool:
            try:
                data = to_metrics_data(families, res, start, time.time_ns(), version)
                return bool(exporter.export(data) is MetricExportResult.SUCCESS)
            except Exception:  # noqa: BLE001 - a side channel: counted, never raised
                return False

        self._busy = True
        try:
            ok = await in_daemon_thread(export, "killgate-otlp-metrics")
        finally:
            self._busy = False
        if ok:
            self.exported += 1
        else:
            self.dropped["export_failed"] += 1
        return ok

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        stalled = self._busy  # (cancelling the wait leaves that export to its thread)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not stalled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.export_once(), LAST_EXPORT_WAIT)
        exporter, self._exporter = self._exporter, None
        with contextlib.suppress(Exception):
            exporter.shutdown()
