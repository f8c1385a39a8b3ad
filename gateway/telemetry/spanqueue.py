"""The bounded road from a finished span to the OTLP collector, with every loss counted.

Owns `BoundedProcessor`: finished spans enter the SDK's BatchSpanProcessor (a worker thread
exports them in batches) only while fewer than `max_queue` wait; beyond, they are dropped
and counted (`queue_full`), so a collector that is down or stalled costs memory up to the
bound and never blocks the request path. Batches the exporter fails (collector down, 5xx,
timeout: the exporter retries within its own timeout) are counted as `export_failed`.
Thread-safe: spans end on the event loop, exports run on the SDK's worker thread.
`WireExporter` hands the OTLP exporter's transport bytes from telemetry/otlpwire.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gateway.telemetry.otelcommon import ExportCounts
from gateway.telemetry.otlpwire import Unsupported, encode_spans

__all__ = ["BoundedProcessor", "ExportCounts", "WireExporter"]


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


class WireExporter(SpanExporter):
    """The OTLP/HTTP span exporter, its batches encoded by telemetry/otlpwire.py: the
    exporter's own transport (endpoint, headers, compression, TLS, timeout, retries, as
    configured) without its object-per-value encoding, several times the cost.

    The transport is the exporter's `_client` (a private attribute of
    opentelemetry-exporter-otlp-proto-http 1.45, hence the upper bound in pyproject.toml):
    when it is not there, or a batch holds what the wire encoder does not write (links,
    mapping values), the exporter's public `export` does the whole job instead."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        post = getattr(getattr(inner, "_client", None), "export", None)
        self._post = post if callable(post) else None
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._post is None or self._shutdown:
            return self.inner.export(spans)
        try:
            data = encode_spans(spans)
        except Unsupported:
            return self.inner.export(spans)
        ok = getattr(self._post(data), "success", False) is True
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._shutdown = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedProcessor(SpanProcessor):
    def __init__(self, exporter: SpanExporter, max_queue: int, max_batch: int,
                 counts: ExportCounts, schedule_delay_ms: float | None = None,
                 export_timeout_ms: float | None = None) -> None:
        self.counts = counts
        self.max_queue = max_queue
        # the SDK's own queue is larger than our bound, so it never drops uncounted
        self.batch = BatchSpanProcessor(_CountingExporter(exporter, counts),
                                        max_queue_size=max_queue + max_batch,
                                        schedule_delay_millis=schedule_delay_ms,
                                        max_export_batch_size=max_batch,
                                        export_timeout_millis=export_timeout_ms)

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
