"""The bounded road from a finished span to the OTLP collector, with every loss counted.

Owns `BoundedProcessor`: finished spans enter the SDK's BatchSpanProcessor (a worker thread
exports them in batches) only while fewer than `max_queue` wait; beyond, they are dropped
and counted (`queue_full`), so a collector that is down or stalled costs memory up to the
bound and never blocks the request path. Batches the exporter fails (collector down, 5xx,
timeout: the exporter retries within its own timeout) are counted as `export_failed`.
Thread-safe: spans end on the event loop, exports run on the SDK's worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["BoundedProcessor", "ExportCounts"]


class ExportCounts:
    """Spans exported and dropped (by reason), since start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending = 0  # handed to the batch processor, not yet taken by the exporter
        self.exported = 0
        self.dropped: dict[str, int] = {"queue_full": 0, "export_failed": 0}

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            return self.exported, dict(self.dropped)


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, counts: ExportCounts) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        c = self.counts
        with c.lock:
            c.pending -= n
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001 - a side channel: an exporter bug loses spans only
            result = SpanExportResult.FAILURE
        with c.lock:
            if result is SpanExportResult.SUCCESS:
                c.exported += n
            else:
                c.dropped["export_failed"] += n
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedProcessor(SpanProcessor):
    def __init__(self, exporter: SpanExporter, max_queue: int, max_batch: int,
                 counts: ExportCounts) -> None:
        self.counts = counts
        self.max_queue = max_queue
        # the SDK's own queue is larger than our bound, so it never drops uncounted
        self.batch = BatchSpanProcessor(_CountingExporter(exporter, counts),
                                        max_queue_size=max_queue + max_batch,
                                        max_export_batch_size=max_batch)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        c = self.counts
        with c.lock:
            if c.pending >= self.max_queue:
                c.dropped["queue_full"] += 1
                return
            c.pending += 1
        self.batch.on_end(span)

    def shutdown(self) -> None:
        self.batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)
