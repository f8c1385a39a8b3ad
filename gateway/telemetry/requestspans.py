"""Data-plane spans: head sampling, and a sampled request's SERVER and CLIENT spans.

Owns `RequestSpans` (the `dataplane.spans.RequestTracer` the proxy calls): the sampling
decision and a sampled request's first attributes; the spans it hands out are
telemetry/sampledspans.py's. The sampling decision is made before any OpenTelemetry object exists: an
unsampled request costs a header check and one random number. A sampled request's spans
are plain attribute dicts and timestamps while it runs, and become `ReadableSpan`s (the
SDK's finished-span type, which span processors and exporters take) once, when each ends
— without the SDK's live-span machinery (context objects, locks, per-attribute checks:
what we set is always a str, int, float or bool). Span shapes: see README "Tracing".
"""

from __future__ import annotations

from collections.abc import Callable
from random import getrandbits
from typing import Any, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags

from gateway.telemetry.otelcommon import METHODS, method_name
from gateway.telemetry.otelenv import Sampling
from gateway.telemetry.record import IncomingRequest
from gateway.telemetry.sampledspans import SampledRequest, port_number
from gateway.telemetry.w3c import parse_traceparent

__all__ = ["METHODS", "RequestSpans", "method_name"]

class RequestSpans:
    """Head sampling and spans for the data plane (`dataplane.spans.RequestTracer`).

    `emit` takes each finished span (a span processor's `on_end`)."""

    def __init__(self, emit: Callable[[ReadableSpan], None], resource: Resource,
                 scope: InstrumentationScope, sampling: Sampling) -> None:
        self.emit = emit
        self.resource = resource
        self.scope = scope
        self.parent_based = sampling.parent_based
        self.bound = round(sampling.ratio * (1 << 64))  # as TraceIdRatioBased decides

    def sample(self, traceparent: bytes | None) -> tuple[int, SpanContext | None] | None:
        """(trace id, remote parent) of a sampled request; None: not sampled. The request
        path pays this on every request: no objects unless sampled."""
        if traceparent is None:
            low = getrandbits(64)  # the trace id's low half: what the ratio decides on
            if low >= self.bound:
                return None
            return (getrandbits(64) << 64 | low) or 1, None
        parent = parse_traceparent(traceparent.decode("latin-1"))
        if parent is None:
            return self.sample(None)
        if self.parent_based:
            if not parent.flags & 1:
                return None
        elif getrandbits(64) >= self.bound:
            # the ratio alone: not on the caller's trace id, which a client chooses (ids with
            # small low bits would all be kept: at the edge, every request of its own traced)
            return None
        return parent.trace_id, SpanContext(parent.trace_id, parent.span_id, True,
                                            TraceFlags(parent.flags | 1))

    def start(self, decision: object, request: IncomingRequest) -> SampledRequest:
        trace_id, parent = cast(tuple[int, "SpanContext | None"], decision)
        return self._begin(request, trace_id, parent)

    def begin(self, request: IncomingRequest) -> SampledRequest | None:
        """`sample` then `start`, for a request seen as text (the tests' way in)."""
        tp = request.traceparent
        decision = self.sample(None if tp is None else tp.encode("latin-1"))
        return None if decision is None else self.start(decision, request)

    def _begin(self, request: IncomingRequest, trace_id: int,
               parent: SpanContext | None) -> SampledRequest:
        method = request.method
        m = method_name(method)
        attrs: dict[str, Any] = {"http.request.method": m, "url.path": request.path,
                                 "url.scheme": "http",
                                 "network.protocol.version": _protocol(request)}
        if method not in METHODS:
            attrs["http.request.method_original"] = method[:32]
        host = request.host
        if host:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            number = port_number(port)
            if number is None:
                name = host
            attrs["server.address"] = name.strip("[]")[:256]
            if number is not None:
                attrs["server.port"] = number
        if request.remote:
            attrs["client.address"] = request.remote
        ua = request.headers.get("user-agent")
        if ua:
            attrs["user_agent.original"] = ua[:256]
        return SampledRequest(self, trace_id, parent, m, attrs)


def _protocol(request: IncomingRequest) -> str:
    v = getattr(request, "version", None)
    return f"{v[0]}.{v[1]}" if v is not None else "1.1"
