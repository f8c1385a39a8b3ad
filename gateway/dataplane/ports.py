"""The narrow interfaces between the proxy, a flight, and the slow path and streaming that
carry a flight's answer (STYLE: give a part only what it uses). The proxy makes flights
(`proxy.py` -> `flight.py`), a flight runs its slow path and streams (`flight.py` ->
`slowpath.py`, `streaming.py`); none of them imports the one above it: each is handed an
object that satisfies a `Protocol` here. Types only: no behaviour, nothing above it imported.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.dataplane.attempts import Outcome, Policy
from gateway.dataplane.clock import Clock
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.inflight import Aborted, Inflight
from gateway.dataplane.jsonpeek import ModelField
from gateway.dataplane.request import Request
from gateway.dataplane.retry import RetryBudget
from gateway.dataplane.servedmodels import Asked
from gateway.dataplane.shadowtap import Tap
from gateway.dataplane.spans import AttemptSpan
from gateway.dataplane.upstream import Upstreams
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import RoutePlan, Target
from gateway.errors import UpstreamError
from gateway.telemetry.metrics import Metrics

__all__ = ["FlightHost", "Forwarding", "Held", "TableSource"]


class Held(Protocol):
    """The one value a `TableSource` swaps (control/table.py's `Held`): its table is a field."""

    @property
    def table(self) -> RouteTable: ...


class TableSource(Protocol):
    """Where the current routing snapshot is read (control/table.py's `TableHolder`)."""

    @property
    def table(self) -> RouteTable: ...

    @property
    def held(self) -> Held: ...  # (`held.table` reads a field: `table` is a property, a call)


class FlightHost(Protocol):
    """The proxy (`proxy.Proxy`, with its bases `answers.Answers`, `outgoing.Outgoing` and
    `finish.Finish`) as its flights, their slow path and their streams see it: the pools, the
    in-flight set, the route's retry settings, the head for the backend, the gateway's own
    answers and what is counted of each attempt."""

    clock: Clock
    loop: asyncio.AbstractEventLoop
    holder: TableSource
    upstreams: Upstreams
    inflight: Inflight
    metrics: Metrics
    max_body: int
    peek_bytes: int  # server.model_peek_bytes: the window a body's `model` is read in
    unready: dict[Request, list[tuple[str, str, float]]]  # (answers.py)

    def policy(self, plan: RoutePlan) -> Policy: ...

    def killed_since(self, plan: RoutePlan, version: str) -> Aborted | None: ...

    def budget(self, plan: RoutePlan) -> RetryBudget | None: ...

    def request_head(self, req: Request, target: Target, host_line: bytes,
                     length: int | None, raw_target: bytes,
                     traceparent: bytes | None = None, body: bytes = b"") -> bytes: ...

    def tap(self, flight: Forwarding) -> Tap | None: ...

    def write_complete(self, flight: Forwarding, ex: Exchange) -> None: ...

    # what is recorded and counted of an answer or an attempt (answers.py)
    def labels(self, plan: RoutePlan, target: Target | None, decision: str) -> bytes: ...

    def served(self, req: Request, plan: RoutePlan | None, target: Target | None,
               decision: str, status: int, bytes_out: int = 0) -> None: ...

    def observed(self, plan: RoutePlan, target: Target, status: int, started: float,
                 decision: str = "", counted: bool = True) -> None: ...

    def dropped(self, req: Request, plan: RoutePlan, target: Target, status: int,
                not_ready: bool, started: float, model: Asked | None = None) -> None: ...

    def note_served(self, target: Target, model: Asked | None) -> None: ...

    def not_ready_anywhere(self, req: Request) -> None: ...

    def settle_unready(self, req: Request) -> None: ...

    def moved(self, plan: RoutePlan, reason: str) -> None: ...

    def count_error(self, plan: RoutePlan, target: Target, exc: UpstreamError,
                    started: float) -> None: ...

    # the gateway's own answers (answers.py)
    def too_large(self, req: Request, plan: RoutePlan | None) -> None: ...

    def unavailable(self, req: Request, plan: RoutePlan, decision: str,
                    scope: str | None = None) -> None: ...

    def unavailable_killed(self, req: Request, plan: RoutePlan, target: Target,
                           why: Aborted) -> None: ...

    def upstream_failed(self, req: Request, plan: RoutePlan, target: Target, decision: str,
                        exc: UpstreamError, note: str = "") -> None: ...

    def body_failed(self, req: Request, plan: RoutePlan | None, target: Target | None,
                    decision: str, exc: Exception) -> None: ...


class Forwarding(Protocol):
    """A request being forwarded (`flight.Flight`) as its slow path and its stream see it:
    the flight's state and the steps of its plan. The underscored members are the flight's
    own, shared with its two parts only (never the proxy's to call)."""

    proxy: FlightHost
    req: Request
    plan: RoutePlan
    target: Target
    decision: str
    counted: bool  # its outcome counts toward canary analysis (analysis.max_per_key)
    prefix: bytes | None  # the body (complete) or its first bytes, in memory
    complete: bool  # the whole body is in `prefix`: it can be sent again
    field: ModelField | None
    raw_target: bytes
    routing_path: str
    version: str | None
    exchange: Exchange | None
    aborted: Aborted | None
    started: float
    deadline: float
    att: AttemptSpan | None
    faulted: str | None
    new_connection: bool

    def asked_model(self) -> Asked | None: ...
    def asked_name(self) -> str | None: ...

    def _body(self) -> bytes: ...

    def _fast(self) -> bool: ...

    def _next(self, outcome: Outcome, err: UpstreamError | None, ex: Exchange | None) -> bool: ...

    def _trace_failed(self, err: UpstreamError) -> None: ...

    def _answer_killed(self, why: Aborted) -> None: ...

    def _passed_kill(self, why: Aborted) -> bool: ...

    def _close_ex(self) -> None: ...

    def _finished(self) -> None: ...
