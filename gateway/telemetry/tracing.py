"""OpenTelemetry tracing of the data plane and the admin API (opentelemetry-sdk, OTLP/HTTP).

Owns the process's TracerProvider (never the global one), its exporter and bounded queue,
and the admin write spans (a SERVER span each, through the SDK's tracer); the data plane's
spans and head sampling are telemetry/requestspans.py's, fed into the same queue. `Tracing`
is the async context manager the composition root enters (built with no settings: off).
The SDK's trace side is imported only when tracing starts: it reads OTEL_SPAN_*_LIMIT and
the like when imported, and raises on a value it refuses; such a failure leaves tracing
off (said in the log), never the process down. OpenTelemetry itself (API and SDK: each start
of each worker paid for it) is imported only then: with tracing off, nothing here needs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.log import event
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otelcommon import (
    ExportCounts,
    accepted_only_2xx,
    export_counts,
    in_daemon_thread,
    resource,
)
from gateway.telemetry.otelenv import OtelSettings
from gateway.telemetry.w3c import parse_traceparent, trace_id_hex

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span as OtelSpan

    from gateway.telemetry.adminspans import AdminSpans
    from gateway.telemetry.requestspans import RequestSpans

__all__ = ["AdminSpan", "Tracing"]

log = logging.getLogger("killgate.telemetry")
SHUTDOWN_WAIT = 5.0  # seconds the last export may take on the way out


class AdminSpan:
    """One admin write: its trace id (for the audit event) and, when traced, its span."""

    __slots__ = ("span", "trace_id")

    def __init__(self, trace_id: str, span: OtelSpan | None = None) -> None:
        self.trace_id = trace_id
        self.span = span

    def end(self, status: int) -> None:
        if self.span is None:
            return
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode  # (loaded: tracing is on)

            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class _NoAdminSpans:
    """Tracing off: no span, but the audit event still names the caller's trace."""

    def start(self, method: str, endpoint: str, headers: Mapping[str, str],
              peer: str) -> AdminSpan:
        parent = parse_traceparent(headers.get("traceparent"))
        return AdminSpan(trace_id_hex(parent.trace_id) if parent is not None else "")


class Tracing:
    """The tracing side of telemetry for one process: an async context manager.

    Off (no traces endpoint): `requests` is None and `admin` only reads incoming trace ids.
    """

    def __init__(self, settings: OtelSettings | None, instance: str = "",
                 version: str = "") -> None:
        self.settings = settings
        self.instance = instance
        self.version = version
        self.requests: RequestSpans | None = None
        self.admin: AdminSpans | _NoAdminSpans = _NoAdminSpans()
        self.counts = ExportCounts()
        self._provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def register(self, metrics: Metrics) -> None:
        """Export counts on /metrics (spans dropped are the collector's trouble made
        visible: alert on them), while tracing is on."""
        if not self.enabled:
            return

        export_counts(metrics, "spans", self.counts.snapshot)

    async def __aenter__(self) -> Tracing:
        s = self.settings
        if s is None or s.traces_endpoint is None:
            return self
        try:
            self._start(s, s.traces_endpoint)
        except Exception as exc:  # noqa: BLE001 - a side channel: the gateway serves without
            # it (an OTEL_* value the SDK refuses raises here; its message names it)
            self._provider, self.requests, self.admin = None, None, _NoAdminSpans()
            event(log, "tracing_off", logging.ERROR, endpoint=s.traces_endpoint,
                  error=f"{type(exc).__name__}: {exc}",
                  consequence="no spans are exported; requests and admin calls are served",
                  hint="fix or unset the OTEL_* variable the error names, then restart")
            return self
        event(log, "tracing", endpoint=s.traces_endpoint, ratio=s.sampling.ratio,
              parent_based=s.sampling.parent_based, queue=s.max_queue)
        return self

    def _start(self, s: OtelSettings, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from gateway.telemetry.adminspans import AdminSpans
        from gateway.telemetry.requestspans import RequestSpans
        from gateway.telemetry.spanqueue import BoundedProcessor, WireExporter

        provider = TracerProvider(sampler=ALWAYS_ON,
                                  resource=resource(s, self.instance, self.version),
                                  shutdown_on_exit=False)
        exporter = OTLPSpanExporter(endpoint=endpoint)
        accepted_only_2xx(exporter, "spans")
        queue = BoundedProcessor(WireExporter(exporter), s.max_queue, s.max_batch, self.counts,
                                 s.schedule_delay_ms, s.export_timeout_ms)
        provider.add_span_processor(queue)
        # the data plane's spans skip the SDK's live spans and go straight to the queue
        requests = RequestSpans(queue.on_end, provider.resource,
                                InstrumentationScope("killgate", self.version or None),
                                s.sampling)
        admin = AdminSpans(provider.get_tracer("killgate", self.version or None))
        self._provider, self.requests, self.admin = provider, requests, admin

    async def __aexit__(self, *exc: object) -> None:
        provider, self._provider = self._provider, None
        self.requests = None
        self.admin = _NoAdminSpans()
        if provider is None:
            return
        # The last export may stall on a stalled collector: shutdown waits for it a
        # bounded time, and the daemon thread it runs on cannot hold the exit up.
        try:
            await asyncio.wait_for(in_daemon_thread(provider.shutdown, "killgate-otel-shutdown"),
                                   SHUTDOWN_WAIT)
        except TimeoutError:
            event(log, "tracing_shutdown_timeout", logging.WARNING, seconds=SHUTDOWN_WAIT)

