"""Admin writes as SERVER spans through the SDK's tracer (tracing on).

Imported by telemetry/tracing.py only when tracing starts: it imports OpenTelemetry's API,
which a gateway that exports nothing never loads. Admin writes are rare and matter: always
traced, unless the caller's traceparent says its trace is not sampled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind

from gateway.telemetry.otelcommon import method_name
from gateway.telemetry.tracing import AdminSpan
from gateway.telemetry.w3c import parse_traceparent, trace_id_hex

__all__ = ["AdminSpans"]


def _remote_parent(trace_id: int, span_id: int, flags: int) -> Any:
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))))


class AdminSpans:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def start(self, method: str, endpoint: str, headers: Mapping[str, str],
              peer: str) -> AdminSpan:
        parent = parse_traceparent(headers.get("traceparent"))
        ctx = None
        if parent is not None:
            if not parent.sampled:
                return AdminSpan(trace_id_hex(parent.trace_id))
            ctx = _remote_parent(parent.trace_id, parent.span_id, parent.flags)
        span = self.tracer.start_span(
            f"{method_name(method)} {endpoint}", context=ctx, kind=SpanKind.SERVER,
            attributes={"http.request.method": method_name(method), "http.route": endpoint,
                        "url.path": endpoint, "client.address": peer,
                        "killgate.admin": True})
        return AdminSpan(trace_id_hex(span.get_span_context().trace_id), span)
