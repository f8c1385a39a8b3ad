"""The per-request recorder interface between the data plane and telemetry (STYLE §11).

Owns `RequestRecord` (what one request did, filled in by the data plane as it goes),
the `Recorder` protocol the data plane calls once when a request finishes, the no-op
recorder used when telemetry is off, the fan-out to several recorders, the `arm` of an
answer, and `IncomingRequest` (what a tracer reads of a request). Pure: no I/O, no
third-party imports; a recorder must never raise or block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["ARMS", "NULL", "Fanout", "IncomingRequest", "NewRecord", "NullRecorder",
           "Recorder", "RequestRecord", "arm_of", "combine"]

# Which arm of a route answered: the stable, the canary (any other version chosen by the
# split, a pin or stickiness), or a detour. Labels are this fixed set, never client input.
ARMS = ("stable", "canary", "failover", "fallback", "killed")
_DETOURS = frozenset({"failover", "fallback", "killed"})


def arm_of(decision: str, version: str, stable: str) -> str:
    """The arm of one answer ("" when no route matched)."""
    if decision in _DETOURS:
        return decision
    if not decision:
        return ""
    return "stable" if version == stable else "canary"


class RequestRecord:
    """One request, as the data plane saw it. Times are the event loop's clock (seconds);
    0 (or -1 for `upstream`) means "did not happen". Strings default to "" (no route,
    no version...). The `detail` fields are filled only when a recorder asks for them.

    The defaults are the class's (all immutable): a record is made for every request and
    most fields are written once, or never, after it; setting all sixteen in `__init__`
    cost about 300 CPU instructions a request more (so no `__slots__`: mypy checks the
    names written)."""

    end: float = 0.0
    route: str = ""
    version: str = ""
    decision: str = ""
    stable: str = ""  # the route's stable when the request was routed (for the arm)
    status: int = 0
    upstream: float = -1.0  # seconds from sending to the backend's response head
    first_byte: float = 0.0  # when the first body byte of a streamed answer was written
    bytes_out: int = 0  # response body bytes written
    # detail (recorders with `detailed`)
    bytes_in: int = 0
    peer: str = ""
    request_id: str = ""
    method: str = ""
    path: str = ""
    trace_id: str = ""  # filled by tracing when a span exists

    def __init__(self, start: float) -> None:
        self.start = start

    @property
    def arm(self) -> str:
        return arm_of(self.decision, self.version, self.stable)


class NewRecord(RequestRecord):
    """A `RequestRecord` made with no argument, its `start` written after: the data
    plane's, one a request (a class with an `__init__` of Python code costs that call on
    every instance, about 800 CPU instructions; `object.__init__` is C, and no call)."""

    __init__ = object.__init__


class Recorder(Protocol):
    """Told once about every finished request. Must be cheap, never raise, never block."""

    #: whether `done` reads the detail fields (client address, request id, method, path)
    detailed: bool

    def done(self, rec: RequestRecord) -> None: ...


class NullRecorder:
    """Telemetry off: nothing recorded."""

    def __init__(self) -> None:
        # an instance attribute: the data plane reads it on every request, and a class's
        # read through the instance does not specialize (about 250 CPU instructions)
        self.detailed = False

    def done(self, rec: RequestRecord) -> None:
        return None


NULL = NullRecorder()


class Fanout:
    """Several recorders as one."""

    def __init__(self, recorders: list[Recorder]) -> None:
        self.recorders = tuple(recorders)
        self.detailed = any(r.detailed for r in recorders)

    def done(self, rec: RequestRecord) -> None:
        for r in self.recorders:
            r.done(rec)


def combine(*recorders: Recorder | None) -> Recorder:
    """One recorder for those given (None and no-ops left out): the no-op when none is left,
    the recorder itself when one is (no fan-out call on the request path)."""
    real = [r for r in recorders if r is not None and not isinstance(r, NullRecorder)]
    if not real:
        return NULL
    if len(real) == 1:
        return real[0]
    return Fanout(real)


class IncomingRequest(Protocol):
    """What a tracer reads of a data-plane request (telemetry/requestspans.py reads it; the
    data plane's `spans.TraceView` has this shape)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def traceparent(self) -> str | None:
        """The first `traceparent` field, if any (the sampling decision reads only this)."""
    @property
    def host(self) -> str: ...
    @property
    def remote(self) -> str | None: ...
