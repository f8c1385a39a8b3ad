"""OpenTelemetry tracing of the data plane and the admin API (opentelemetry-sdk, OTLP/HTTP).

Owns the process's TracerProvider (never the global one), its exporter and bounded queue,
and the span shapes: a SERVER span per sampled data-plane request (HTTP semantic
conventions plus killgate.route/version/decision and GenAI attributes), a CLIENT span per
upstream attempt whose id travels upstream in `traceparent`, decision events, and a SERVER
span per admin write. Head sampling is decided here without building any OpenTelemetry
object, so an unsampled request costs a header lookup and a random number. `Tracing` is
the async context manager the composition root enters (built with no settings: off).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from random import getrandbits
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace import Span as OtelSpan

from gateway.dataplane.spans import IncomingRequest
from gateway.log import event
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otelcommon import in_daemon_thread, resource
from gateway.telemetry.otelenv import OtelSettings
from gateway.telemetry.spanqueue import BoundedProcessor, ExportCounts
from gateway.telemetry.w3c import parse_traceparent, trace_id_hex

__all__ = ["AdminSpan", "Tracing"]

log = logging.getLogger("killgate.telemetry")
_MASK64 = (1 << 64) - 1
SHUTDOWN_WAIT = 5.0  # seconds the last export may take on the way out
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                      "PATCH"})
_RESPONSE_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')


class _Ids(IdGenerator):
    """Random ids, except that a new trace gets the id the sampling decision was made on
    (set just before `start_span`, on the one event-loop thread)."""

    def __init__(self) -> None:
        self.next_trace_id = 0

    def generate_span_id(self) -> int:
        return getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        tid, self.next_trace_id = self.next_trace_id, 0
        return tid or getrandbits(128) or 1


def _remote_parent(trace_id: int, span_id: int, flags: int) -> Any:
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))))


def _method(m: str) -> str:
    return m if m in _METHODS else "_OTHER"


class _Attempt:
    """A CLIENT span: one exchange with one backend."""

    __slots__ = ("span", "status", "traceparent")

    def __init__(self, span: OtelSpan) -> None:
        self.span = span
        ctx = span.get_span_context()
        self.traceparent = b"00-%032x-%016x-01" % (ctx.trace_id, ctx.span_id)
        self.status = 0

    def answered(self, status: int) -> None:
        self.status = status
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))

    def failed(self, kind: str) -> None:
        self.span.set_attribute("error.type", kind)
        self.span.set_status(Status(StatusCode.ERROR, kind))
        self.span.end()

    def end(self) -> None:
        if self.span.is_recording():
            self.span.end()


class _Request:
    """A SERVER span: one sampled data-plane request."""

    __slots__ = ("_answer", "_attempt", "_attempts", "_genai", "_method", "_t0", "_tracer",
                 "span", "trace_id")

    def __init__(self, tracer: trace.Tracer, span: OtelSpan, method: str) -> None:
        self._tracer = tracer
        self.trace_id = trace_id_hex(span.get_span_context().trace_id)
        self._method = method
        self.span = span
        self._t0 = time.monotonic()
        self._attempt: _Attempt | None = None
        self._attempts = 0
        self._answer: tuple[int, str, str, str] | None = None
        self._genai = False

    def attempt(self, route: str, version: str, url: str, method: str) -> _Attempt:
        if self._attempt is not None:
            self._attempt.end()
        self._attempts += 1
        attrs: dict[str, Any] = {
            "http.request.method": _method(method), "url.full": url,
            "killgate.route": route, "killgate.version": version,
            "killgate.attempt": self._attempts}
        if self._attempts > 1:
            attrs["http.request.resend_count"] = self._attempts - 1
        host, _, port = url.split("://", 1)[-1].split("/", 1)[0].rpartition(":")
        if host and port.isdigit():
            attrs["server.address"] = host.strip("[]")
            attrs["server.port"] = int(port)
        span = self._tracer.start_span(f"{_method(method)} {route}/{version}",
                                       context=trace.set_span_in_context(self.span),
                                       kind=SpanKind.CLIENT, attributes=attrs)
        self._attempt = _Attempt(span)
        return self._attempt

    def event(self, name: str, attributes: Mapping[str, str | int | float]) -> None:
        self.span.add_event(name, attributes)

    def model(self, requested: str | None, operation: str | None) -> None:
        self._genai = True
        if requested:
            self.span.set_attribute("gen_ai.request.model", requested[:256])
        if operation:
            self.span.set_attribute("gen_ai.operation.name", operation)

    def _response_model(self, data: bytes) -> None:
        if self._genai:
            m = _RESPONSE_MODEL.search(data, 0, 4096)
            if m is not None:
                self.span.set_attribute("gen_ai.response.model",
                                        m.group(1).decode("utf-8", "replace"))

    def first_chunk(self, data: bytes) -> None:
        ttfc = time.monotonic() - self._t0
        self.span.set_attribute("gen_ai.response.time_to_first_chunk", round(ttfc, 6))
        self.span.add_event("killgate.first_chunk", {"killgate.elapsed_s": round(ttfc, 6)})
        self._response_model(data)

    def body(self, data: bytes) -> None:
        self._response_model(data)

    def answered(self, status: int, route: str, version: str, decision: str) -> None:
        self._answer = (status, route, version, decision)

    def stream_failed(self, kind: str) -> None:
        self.span.set_attribute("error.type", kind)
        self.span.set_status(Status(StatusCode.ERROR, f"the stream was cut: {kind}"))
        self.span.add_event("killgate.stream_cut", {"killgate.cause": kind})

    def finish(self, answered: bool) -> None:
        span = self.span
        if self._attempt is not None:
            self._attempt.end()
        if not answered or self._answer is None:
            span.set_attribute("error.type", "cancelled")
            span.set_status(Status(StatusCode.ERROR, "the request ended without an answer"))
            span.end()
            return
        status, route, version, decision = self._answer
        attrs: dict[str, Any] = {"http.response.status_code": status}
        if route:
            attrs["killgate.route"] = route
            span.update_name(f"{self._method} {route}")
        if version:
            attrs["killgate.version"] = version
        if decision:
            attrs["killgate.decision"] = decision
            if decision == "fallback":
                span.add_event("killgate.fallback", {"http.response.status_code": status})
        if self._attempts:
            attrs["killgate.attempts"] = self._attempts
        if status >= 500:
            attrs["error.type"] = str(status)
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attrs)
        span.end()


class _RequestTracer:
    """Head sampling and SERVER spans for the data plane (`dataplane.spans.RequestTracer`)."""

    def __init__(self, tracer: trace.Tracer, ids: _Ids, settings: OtelSettings) -> None:
        self.tracer = tracer
        self.ids = ids
        self.parent_based = settings.sampling.parent_based
        self.bound = round(settings.sampling.ratio * (1 << 64))

    def begin(self, request: IncomingRequest) -> _Request | None:
        tp = request.headers.get("traceparent")
        parent = parse_traceparent(tp) if tp is not None else None
        if parent is None:
            tid = getrandbits(128) or 1
            if (tid & _MASK64) >= self.bound:
                return None
            self.ids.next_trace_id = tid
            ctx = None
        else:
            if self.parent_based:
                if not parent.flags & 1:
                    return None
            elif (parent.trace_id & _MASK64) >= self.bound:
                return None
            ctx = _remote_parent(parent.trace_id, parent.span_id, parent.flags | 1)
        method = request.method
        attrs: dict[str, Any] = {"http.request.method": _method(method),
                                 "url.path": request.path, "url.scheme": "http",
                                 "network.protocol.version": _protocol(request)}
        if method not in _METHODS:
            attrs["http.request.method_original"] = method[:32]
        host = request.host
        if host:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if not port.isdigit():
                name = host
            attrs["server.address"] = name.strip("[]")[:256]
            if port.isdigit():
                attrs["server.port"] = int(port)
        if request.remote:
            attrs["client.address"] = request.remote
        ua = request.headers.get("user-agent")
        if ua:
            attrs["user_agent.original"] = ua[:256]
        span = self.tracer.start_span(_method(method), context=ctx, kind=SpanKind.SERVER,
                                      attributes=attrs)
        return _Request(self.tracer, span, _method(method))


def _protocol(request: IncomingRequest) -> str:
    v = getattr(request, "version", None)
    return f"{v[0]}.{v[1]}" if v is not None else "1.1"


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
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class _NoAdminSpans:
    """Tracing off: no span, but the audit event still names the caller's trace."""

    def start(self, method: str, endpoint: str, headers: Mapping[str, str],
              peer: str) -> AdminSpan:
        parent = parse_traceparent(headers.get("traceparent"))
        return AdminSpan(trace_id_hex(parent.trace_id) if parent is not None else "")


class _AdminSpans:
    """Admin writes are rare and matter: always traced, unless the caller's traceparent
    says its trace is not sampled."""

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
            f"{_method(method)} {endpoint}", context=ctx, kind=SpanKind.SERVER,
            attributes={"http.request.method": _method(method), "http.route": endpoint,
                        "url.path": endpoint, "client.address": peer,
                        "killgate.admin": True})
        return AdminSpan(trace_id_hex(span.get_span_context().trace_id), span)


class Tracing:
    """The tracing side of telemetry for one process: an async context manager.

    Off (no traces endpoint): `requests` is None and `admin` only reads incoming trace ids.
    """

    def __init__(self, settings: OtelSettings | None, instance: str = "",
                 version: str = "") -> None:
        self.settings = settings
        self.instance = instance
        self.version = version
        self.requests: _RequestTracer | None = None
        self.admin: _AdminSpans | _NoAdminSpans = _NoAdminSpans()
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

        def collect(m: Metrics) -> None:
            exported, dropped = self.counts.snapshot()
            m.set("killgate_otel_exported_total", exported, ("spans",), label_names=("signal",))
            for reason, n in dropped.items():
                m.set("killgate_otel_dropped_total", n, ("spans", reason),
                      label_names=("signal", "reason"))

        metrics.collector(collect)

    async def __aenter__(self) -> Tracing:
        s = self.settings
        if s is None or s.traces_endpoint is None:
            return self
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        ids = _Ids()
        provider = TracerProvider(sampler=ALWAYS_ON,
                                  resource=resource(s, self.instance, self.version),
                                  id_generator=ids, shutdown_on_exit=False)
        provider.add_span_processor(BoundedProcessor(
            OTLPSpanExporter(endpoint=s.traces_endpoint), s.max_queue, s.max_batch,
            self.counts))
        tracer = provider.get_tracer("killgate", self.version or None)
        self._provider = provider
        self.requests = _RequestTracer(tracer, ids, s)
        self.admin = _AdminSpans(tracer)
        event(log, "tracing", endpoint=s.traces_endpoint, ratio=s.sampling.ratio,
              parent_based=s.sampling.parent_based, queue=s.max_queue)
        return self

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

