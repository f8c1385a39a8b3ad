"""The tracing hook the data plane calls (STYLE §11): protocols only, no OpenTelemetry.

`RequestTracer.begin` decides head sampling from the request's `traceparent`; it returns a
`RequestSpan` only for a sampled request, so with tracing off (the proxy holds None) or for
an unsampled request the request path does nothing but one `is None` check. Implemented by
`gateway.telemetry.tracing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

__all__ = ["AttemptSpan", "IncomingRequest", "RequestSpan", "RequestTracer"]


class IncomingRequest(Protocol):
    """What a tracer reads of a data-plane request (aiohttp's BaseRequest has it all)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def host(self) -> str: ...
    @property
    def remote(self) -> str | None: ...


class AttemptSpan(Protocol):
    """One exchange with one backend (a CLIENT span)."""

    #: the `traceparent` value to send upstream (carries this attempt's span id)
    traceparent: bytes

    def answered(self, status: int) -> None:
        """The backend's response head arrived."""

    def failed(self, kind: str) -> None:
        """The exchange failed before an answer (`kind`: connect, reset, timeout, ...)."""


class RequestSpan(Protocol):
    """One sampled data-plane request (a SERVER span)."""

    #: its trace id, 32 hex digits
    trace_id: str

    def attempt(self, route: str, version: str, url: str, method: str) -> AttemptSpan:
        """A new upstream attempt; the previous one, if still open, ends."""

    def event(self, name: str, attributes: Mapping[str, str | int | float]) -> None:
        """A routing decision worth seeing on the trace (kill, failover, fallback, ...)."""

    def model(self, requested: str | None, operation: str | None) -> None:
        """An OpenAI-style request: the model asked of the backend (GenAI conventions)."""

    def first_chunk(self, data: bytes) -> None:
        """The first body bytes of a streamed answer reached the client."""

    def body(self, data: bytes) -> None:
        """A complete answer body (read for the response's model, when cheap)."""

    def answered(self, status: int, route: str, version: str, decision: str) -> None:
        """The answer was written directly to the transport (no response object to read)."""

    def stream_failed(self, kind: str) -> None:
        """A streamed answer was cut after its head was sent."""

    def finish(self, response: web.StreamResponse | None) -> None:
        """The request is over (None: it raised); the span ends."""


class RequestTracer(Protocol):
    def begin(self, request: IncomingRequest) -> RequestSpan | None:
        """A span for a sampled request; None for an unsampled one (nothing to record)."""
