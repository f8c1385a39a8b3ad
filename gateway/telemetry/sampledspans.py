"""A sampled data-plane request's spans: its SERVER span and a CLIENT span per attempt.

Owns `SampledRequest` and `SampledAttempt`, what `telemetry/requestspans.RequestSpans` hands
the proxy for a request it sampled: plain attribute dicts and timestamps while it runs,
each made a `ReadableSpan` (the SDK's finished-span type) once, when it ends, and handed to
the owner's `emit`. Never built for a request not sampled. Span shapes: README "Tracing".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from random import getrandbits
from time import time_ns
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway.telemetry.otelcommon import method_name
from gateway.telemetry.w3c import trace_id_hex

__all__ = ["SampledAttempt", "SampledRequest", "SpanSink", "port_number"]


class SpanSink(Protocol):
    """Where finished spans go, with what each carries (a RequestSpans)."""

    emit: Callable[[ReadableSpan], None]
    resource: Resource
    scope: InstrumentationScope


_RESPONSE_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


class SampledAttempt:
    """A CLIENT span: one exchange with one backend."""

    __slots__ = ("attrs", "ctx", "ended", "name", "req", "start", "state", "status",
                 "traceparent")

    def __init__(self, req: SampledRequest, name: str, attrs: dict[str, Any]) -> None:
        trace_id = req.ctx.trace_id
        span_id = getrandbits(64) or 1
        self.req = req
        self.name = name
        self.attrs = attrs
        self.ctx = SpanContext(trace_id, span_id, False, _SAMPLED)
        self.traceparent = b"00-%032x-%016x-01" % (trace_id, span_id)
        self.status = 0
        self.state = _UNSET
        self.ended = False
        self.start = time_ns()

    def answered(self, status: int) -> None:
        if self.ended:
            return
        self.status = status
        self.attrs["http.response.status_code"] = status
        if status >= 500:
            self.attrs["error.type"] = str(status)
            self.state = _ERROR

    def failed(self, kind: str) -> None:
        if self.ended:
            return
        self.attrs["error.type"] = kind
        self.state = Status(StatusCode.ERROR, kind)
        self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        req = self.req
        req.owner.emit(ReadableSpan(
            self.name, self.ctx, req.ctx, req.owner.resource, self.attrs, (), (),
            SpanKind.CLIENT, None, self.state, self.start, time_ns(), req.owner.scope))


class SampledRequest:
    """A SERVER span: one sampled data-plane request."""

    __slots__ = ("_answer", "_attempt", "_attempts", "_genai", "_method", "_t0", "attrs",
                 "ctx", "ended", "events", "owner", "parent", "start", "state", "trace_id")

    def __init__(self, owner: SpanSink, trace_id: int, parent: SpanContext | None,
                 method: str, attrs: dict[str, Any]) -> None:
        self.owner = owner
        self.ctx = SpanContext(trace_id, getrandbits(64) or 1, False, _SAMPLED)
        self.parent = parent
        self.trace_id = trace_id_hex(trace_id)
        self._method = method
        self.attrs = attrs
        self.events: list[Event] = []
        self.state = _UNSET
        self.ended = False
        self._attempt: SampledAttempt | None = None
        self._attempts = 0
        self._answer: tuple[int, str, str, str] | None = None
        self._genai = False
        self._t0 = time.monotonic()
        self.start = time_ns()

    def attempt(self, route: str, version: str, url: str, method: str) -> SampledAttempt:
        if self._attempt is not None:
            self._attempt.end()
        self._attempts += 1
        m = method_name(method)
        # the backend's URL (a version's url may carry a path) and the request's path, as
        # forwarded: never its query
        path = self.attrs.get("url.path", "")
        full = url + path if path[:1] == "/" else url
        attrs: dict[str, Any] = {"http.request.method": m, "url.full": full,
                                 "killgate.route": route, "killgate.version": version,
                                 "killgate.attempt": self._attempts}
        if self._attempts > 1:
            attrs["http.request.resend_count"] = self._attempts - 1
        host, _, port = url.split("://", 1)[-1].split("/", 1)[0].rpartition(":")
        if host and port_number(port) is not None:
            attrs["server.address"] = host.strip("[]")
            attrs["server.port"] = int(port)
        self._attempt = SampledAttempt(self, f"{m} {route}/{version}", attrs)
        return self._attempt

    def copy(self, route: str, version: str, url: str, method: str) -> SampledAttempt:
        m = method_name(method)
        path = self.attrs.get("url.path", "")
        attrs: dict[str, Any] = {"http.request.method": m,
                                 "url.full": url + path if path[:1] == "/" else url,
                                 "killgate.route": route, "killgate.version": version,
                                 "killgate.shadow": True}
        return SampledAttempt(self, f"{m} {route}/{version} shadow", attrs)

    def event(self, name: str, attributes: Mapping[str, str | int | float]) -> None:
        if not self.ended:
            self.events.append(Event(name, dict(attributes), time_ns()))

    def model(self, requested: str | None, operation: str | None) -> None:
        self._genai = True
        if requested:
            self.attrs["gen_ai.request.model"] = requested[:256]
        if operation:
            self.attrs["gen_ai.operation.name"] = operation

    def _response_model(self, data: bytes) -> None:
        if self._genai:
            m = _RESPONSE_MODEL.search(data, 0, 4096)
            if m is not None:
                self.attrs["gen_ai.response.model"] = m.group(1).decode("utf-8", "replace")

    def first_chunk(self, data: bytes) -> None:
        ttfc = round(time.monotonic() - self._t0, 6)
        if self._genai:  # (gen_ai.* says "a GenAI call": OpenAI-style routes only)
            self.attrs["gen_ai.response.time_to_first_chunk"] = ttfc
        self.event("killgate.first_chunk", {"killgate.elapsed_s": ttfc})
        self._response_model(data)

    def body(self, data: bytes) -> None:
        self._response_model(data)

    def answered(self, status: int, route: str, version: str, decision: str) -> None:
        self._answer = (status, route, version, decision)

    def stream_failed(self, kind: str) -> None:
        self.attrs["error.type"] = kind
        self.state = Status(StatusCode.ERROR, f"the stream was cut: {kind}")
        self.event("killgate.stream_cut", {"killgate.cause": kind})
        # the exchange with the backend was cut too (it died, a kill or the drain cut it),
        # unless the client was the one too slow
        if self._attempt is not None and kind != "client_timeout":
            self._attempt.failed(kind)

    def finish(self, answered: bool) -> None:
        if self.ended:
            return
        if self._attempt is not None:
            if answered or self._attempt.status:
                self._attempt.end()
            else:  # the exchange was abandoned before the backend answered
                self._attempt.failed("cancelled")
        attrs = self.attrs
        name = self._method
        if not answered or self._answer is None:
            attrs["error.type"] = "cancelled"
            self.state = Status(StatusCode.ERROR, "the request ended without an answer")
            last = self._attempt
            if last is not None:  # routed: name what it waited on (as /metrics counts it)
                route, version = last.attrs["killgate.route"], last.attrs["killgate.version"]
                attrs["killgate.route"], attrs["killgate.version"] = route, version
                attrs["killgate.attempts"] = self._attempts
                name = f"{name} {route}"
        else:
            status, route, version, decision = self._answer
            attrs["http.response.status_code"] = status
            if route:
                attrs["killgate.route"] = route
                name = f"{name} {route}"
            if version:
                attrs["killgate.version"] = version
            if decision:
                attrs["killgate.decision"] = decision
                if decision == "fallback":
                    self.event("killgate.fallback", {"http.response.status_code": status})
            if self._attempts:
                attrs["killgate.attempts"] = self._attempts
            if status >= 500:
                attrs["error.type"] = str(status)
                self.state = _ERROR
        self.ended = True
        owner = self.owner
        owner.emit(ReadableSpan(name, self.ctx, self.parent, owner.resource, attrs,
                                self.events, (), SpanKind.SERVER, None, self.state,
                                self.start, time_ns(), owner.scope))


def port_number(text: str) -> int | None:
    """A port number, or None. Not str.isdigit() alone: the client's Host is read as
    latin-1, where '\xb2' and '\xb9' are digits to isdigit() and not to int(), and a run
    of thousands of digits is over int()'s limit: either raised in the request's path."""
    if not 0 < len(text) <= 5 or not text.isascii() or not text.isdigit():
        return None
    n = int(text)
    return n if n <= 65535 else None
