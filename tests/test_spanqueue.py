"""The bounded export queue (telemetry/spanqueue.py): a stalled or failing exporter costs at
most the bound, and every lost span is counted. Driven by the real SDK, without sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.telemetry.spanqueue import BoundedProcessor, ExportCounts
from tests.conftest import wait_until_sync


class Stalled(SpanExporter):
    """Blocks every export until released (a collector that never answers)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.release.wait(10)
        return SpanExportResult.SUCCESS


class Failing(SpanExporter):
    def __init__(self, raise_: bool) -> None:
        self.raise_ = raise_

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.raise_:
            raise ConnectionError("collector gone")
        return SpanExportResult.FAILURE


def _provider(exporter: SpanExporter, queue: int, batch: int,
              counts: ExportCounts) -> TracerProvider:
    p = TracerProvider(shutdown_on_exit=False)
    p.add_span_processor(BoundedProcessor(exporter, queue, batch, counts))
    return p


def test_a_stalled_exporter_fills_the_bound_then_spans_are_dropped_and_counted(
        monkeypatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    counts = ExportCounts()
    stalled = Stalled()
    p = _provider(stalled, 8, 4, counts)
    tracer = p.get_tracer("t")
    tracer.start_span("first").end()
    wait_until_sync(lambda: stalled.calls == 1, what="the exporter to take a batch")
    t0 = time.perf_counter()
    for i in range(100):
        tracer.start_span(f"s{i}").end()  # never waits for the exporter
    assert time.perf_counter() - t0 < 0.5
    exported, dropped = counts.snapshot()
    assert dropped["queue_full"] == 100 - 8 and counts.pending == 8
    stalled.release.set()
    p.shutdown()
    exported, dropped = counts.snapshot()
    assert exported == 1 + 8 and dropped["export_failed"] == 0


def test_failed_exports_are_counted_whether_they_fail_or_raise(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    for raise_ in (False, True):
        counts = ExportCounts()
        p = _provider(Failing(raise_), 100, 10, counts)
        for i in range(25):
            p.get_tracer("t").start_span(f"s{i}").end()
        p.shutdown()
        assert counts.snapshot() == (0, {"queue_full": 0, "export_failed": 25})
        assert counts.pending == 0
