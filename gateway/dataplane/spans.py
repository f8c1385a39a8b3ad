"""The tracing hook the data plane calls (STYLE §11): protocols and the small helpers that
feed them, no OpenTelemetry.

`RequestTracer.sample` decides head sampling from the request's first `traceparent` bytes
(noted by the parser); `start` makes a `RequestSpan` only for a sampled request, so with
tracing off (the proxy holds None) or for an unsampled request the request path does one
`is None` check (and, tracing on, that decision). Implemented by `gateway.telemetry.tracing`;
`IncomingRequest` (what a tracer reads) is declared once, in `gateway.telemetry.record`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from gateway import redact
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import FAILOVER, FALLBACK, KILLED, Choice, RoutePlan, Target
from gateway.telemetry.record import IncomingRequest

if TYPE_CHECKING:
    from gateway.dataplane.request import Request

__all__ = ["AttemptSpan", "IncomingRequest", "RequestSpan", "RequestTracer", "TraceView",
           "trace_choice", "trace_ejection"]


class AttemptSpan(Protocol):
    """One exchange with one backend (a CLIENT span)."""

    #: the `traceparent` value to send upstream (carries this attempt's span id)
    traceparent: bytes

    def answered(self, status: int) -> None:
        """The backend's response head arrived."""

    def failed(self, kind: str) -> None:
        """The exchange failed before an answer (`kind`: connect, reset, timeout, ...)."""

    def end(self) -> None:
        """The exchange is over (after `answered`; `failed` ends it too)."""


class RequestSpan(Protocol):
    """One sampled data-plane request (a SERVER span)."""

    #: its trace id, 32 hex digits
    trace_id: str

    def attempt(self, route: str, version: str, url: str, method: str) -> AttemptSpan:
        """A new upstream attempt; the previous one, if still open, ends."""

    def copy(self, route: str, version: str, url: str, method: str) -> AttemptSpan:
        """A shadow copy's exchange: a CLIENT span of this request's, apart from its
        attempts (it may start after the request's span ended)."""

    def event(self, name: str, attributes: Mapping[str, str | int | float]) -> None:
        """A routing decision worth seeing on the trace (kill, failover, fallback, ...)."""

    def model(self, requested: str | None, operation: str | None) -> None:
        """An OpenAI-style request: the model asked of the backend (GenAI conventions)."""

    def first_chunk(self, data: bytes) -> None:
        """The first body bytes of a streamed answer reached the client."""

    def body(self, data: bytes) -> None:
        """A complete answer body (read for the response's model, when cheap)."""

    def answered(self, status: int, route: str, version: str, decision: str) -> None:
        """The answer's status and labels (every answer, the gateway's own included)."""

    def stream_failed(self, kind: str) -> None:
        """A streamed answer was cut after its head was sent."""

    def finish(self, answered: bool) -> None:
        """The request is over; `answered` False: it ended without an answer (the client
        went away); else `answered()` said how. The span ends."""


class RequestTracer(Protocol):
    def sample(self, traceparent: bytes | None) -> object | None:
        """The head-sampling decision from the request's first `traceparent` field: None
        for an unsampled request (nothing more happens), else what `start` takes. Cheap:
        every request pays it when tracing is on."""

    def start(self, decision: object, request: IncomingRequest) -> RequestSpan:
        """The span of a request `sample` chose."""


class TraceView:
    """What a tracer reads of a request (`IncomingRequest`), as text, with tracing on; fields
    are decoded leniently (a tracer must never refuse a request)."""

    __slots__ = ("req",)

    def __init__(self, req: Request) -> None:
        self.req = req

    @property
    def method(self) -> str:
        return self.req.method.decode("latin-1")

    @property
    def path(self) -> str:
        path = self.req.path
        # an absolute-form target (refused, and traced all the same) may carry userinfo
        return path if path[:1] == "/" else redact.url(path)

    @property
    def headers(self) -> _Lenient:
        return _Lenient(self.req.raw_headers)

    @property
    def traceparent(self) -> str | None:
        tp = self.req.traceparent
        return None if tp is None else tp.decode("latin-1")

    @property
    def host(self) -> str:
        return (self.req.host or b"").decode("latin-1")

    @property
    def remote(self) -> str | None:
        return self.req.remote

    @property
    def version(self) -> tuple[int, int]:
        return (1, 0) if self.req.http10 else (1, 1)


class _Lenient(Mapping[str, str]):
    """Raw fields as text, first of each name, Latin-1 (never raises), decoded on demand."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def __getitem__(self, key: str) -> str:
        name = key.lower().encode("latin-1")
        for n, v in self.raw:
            if n.lower() == name:
                return v.decode("latin-1")
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter({n.decode("latin-1").lower(): None for n, _ in self.raw})

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self.raw})


def trace_ejection(span: RequestSpan, table: RouteTable, plan: RoutePlan,
                   target: Target) -> None:
    """This attempt's outcome got its version ejected (outlier detection acts at once)."""
    if (plan.name, target.name) in table.unhealthy and target.name not in plan.excluded:
        span.event("killgate.ejection", {"killgate.version": target.name,
                                         "killgate.ejection.cause": "outlier"})


def trace_choice(span: RequestSpan, plan: RoutePlan, choice: Choice, model: str | None,
                  path: str) -> None:
    """Events for a routing decision shaped by a kill, an ejection or an empty route."""
    decision = choice.decision
    if decision == KILLED:
        span.event("killgate.kill", {"killgate.kill.scope": plan.killed or "route"})
        if plan.fallback is not None:
            span.event("killgate.fallback", {"http.response.status_code": plan.fallback.status})
    elif decision == FAILOVER and choice.target is not None:
        span.event("killgate.failover", {"killgate.failover.to": choice.target.name,
                                         "killgate.failover.cause": "excluded"})
    if decision in (FAILOVER, FALLBACK):
        for version, why in plan.excluded.items():
            if why == "killed":
                span.event("killgate.kill", {"killgate.kill.scope": "version",
                                             "killgate.version": version})
            else:
                span.event("killgate.ejection", {"killgate.version": version,
                                                 "killgate.ejection.cause": why})
    target = choice.target
    if model is not None or (target is not None and target.model):
        span.model(target.model if target is not None and target.model else model,
                   _genai_operation(path))


def _genai_operation(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "text_completion"
    if path.endswith("/embeddings"):
        return "embeddings"
    return None
