"""OTLP metrics: the same series as /metrics, pushed to an OTLP collector every interval.

Owns `OtlpMetrics`, an async context manager: every `export_interval` it collects the
Prometheus registry's families on the event loop (as a scrape does: the request path pays
nothing extra), converts them to OpenTelemetry's metric data model on a daemon thread —
counters as cumulative monotonic sums (the `_total` suffix dropped, as OpenTelemetry names
them), gauges as gauges, histograms with per-bucket counts — and exports them with the OTLP
HTTP/protobuf exporter there. One export at a time: a slow collector delays the next round,
never queues them. A last export runs on the way out (bounded). The SDK, the exporter and the
conversion (telemetry/otlpconvert.py) are imported only when an endpoint is configured: a
gateway that pushes nothing never loads them (each start of each worker paid for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

__all__ = ["OtlpMetrics"]

log = logging.getLogger("killgate.telemetry")
LAST_EXPORT_WAIT = 5.0


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
        self._convert: Callable[..., Any] | None = None  # otlpconvert.to_metrics_data
        self._success: Any = None  # MetricExportResult.SUCCESS
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
            from opentelemetry.sdk.metrics.export import MetricExportResult

            from gateway.telemetry.otlpconvert import to_metrics_data

            exporter = OTLPMetricExporter(endpoint=s.metrics_endpoint)
        except Exception as exc:  # noqa: BLE001 - a side channel: the gateway runs without it
            event(log, "otlp_metrics_off", logging.ERROR, endpoint=s.metrics_endpoint,
                  error=f"{type(exc).__name__}: {exc}",
                  consequence="no metrics are pushed over OTLP (/metrics still answers)",
                  hint="fix or unset the OTEL_* variable the error names, then restart")
            return self
        self._exporter = exporter
        self._convert, self._success = to_metrics_data, MetricExportResult.SUCCESS
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
        convert, success = self._convert, self._success
        assert res is not None and exporter is not None and convert is not None

        def export() -> bool:
            try:
                data = convert(families, res, start, time.time_ns(), version)
                return bool(exporter.export(data) is success)
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
