"""Prometheus families as OpenTelemetry's metric data model (for the OTLP metrics export).

Counters become cumulative monotonic sums (the `_total` suffix dropped, as OpenTelemetry names
them), gauges gauges, histograms per-bucket counts. Imported only when an OTLP metrics
exporter starts (telemetry/otlpmetrics.py): it imports the OpenTelemetry SDK, which a
gateway that exports nothing never loads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as PromFamily

__all__ = ["to_metrics_data"]

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
