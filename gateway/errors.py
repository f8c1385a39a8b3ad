"""The one exception tree of killgate.

Third-party exceptions are translated at the boundary of the one module that uses that
library (httptools, the backends' client → dataplane/exchange.py, redis → state/redis.py,
jwt → admin/auth.py). `gateway.admin.api` and `gateway.dataplane.answers` are the only places
that map them to HTTP; the domain's own errors (DomainError) carry no HTTP status.

    KillgateError
    ├── ConfigError              a config file is unusable; .problems lists (yaml path, message)
    ├── ConfigUnsettled          a config file is still being written: read it later (.reason)
    ├── StateError               the state store could not do what was asked
    │   ├── StoreUnavailable     could not reach it / timed out (retry later)
    │   │   └── StoreUnverifiable it answers, but holds a document this instance cannot
    │   │                         verify and will not write over (its key: another instance)
    │   ├── StoreConflict        a compare-and-set lost a race (retry at once)
    │   └── EarlierLanded        a retry's write found its first attempt's in the state
    ├── AuditError               an audit event could not be stored: the action is refused
    ├── DomainError              the state does not allow a change: .type, .message
    │   ├── UnknownVersion       a route has no such version
    │   ├── InvalidChange        the change itself is malformed (weights that are not weights)
    │   ├── ConflictingState     the state forbids it now (not killed, not latched, ...)
    │   ├── BadCursor            an audit page after a cursor the store never gave out
    │   └── UnknownDrill         no such open drill
    ├── ApiError                 an admin request is refused: .status, .type, .message
    │   ├── Unauthenticated      401, a short type only (invalid_token, expired)
    │   └── Forbidden            403, a scope is missing
    └── UpstreamError            talking to a model backend failed
        ├── UpstreamConnectError nothing was sent: safe to try another version
        ├── UpstreamTimeout      connect / idle-read / total deadline passed
        ├── UpstreamProtocolError the backend's answer was malformed (502)
        ├── UpstreamClosed       the backend closed or reset after the request was sent
        │   └── UpstreamStale    ...on a reused keep-alive connection, before any answer byte
        └── DrillFault           a drill's fault met by a drill request (never sent)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApiError",
    "AuditError",
    "BadCursor",
    "ConfigError",
    "ConfigUnsettled",
    "ConflictingState",
    "DomainError",
    "DrillFault",
    "EarlierLanded",
    "Forbidden",
    "InvalidChange",
    "KillgateError",
    "Problem",
    "StateError",
    "StoreConflict",
    "StoreUnavailable",
    "StoreUnverifiable",
    "Unauthenticated",
    "UnknownDrill",
    "UnknownVersion",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamOverflow",
    "UpstreamProtocolError",
    "UpstreamQueueTimeout",
    "UpstreamStale",
    "UpstreamTimeout",
]


class KillgateError(Exception):
    """Base of every error killgate raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file, located by its YAML path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(KillgateError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class ConfigUnsettled(KillgateError):
    """Not a problem of the file: a writer is not done with it. Never a refused reload."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StateError(KillgateError):
    pass


class StoreUnavailable(StateError):
    pass


class StoreUnverifiable(StoreUnavailable):
    """The store answers, but holds a document this instance cannot verify and will not
    write over (state/vouching.py's `_blind`): nothing was changed; not "cannot be reached"."""


class StoreConflict(StateError):
    pass


class StoreOutcomeUnknown(StoreUnavailable):
    """A write reached the store but its answer did not come back (timeout, reset): it may
    or may not have been applied. What the write would have made, when known: `doc` (the
    state document, its write id last in `writes`), `event` (its audit event) and `done`
    (the admin API's answer had it been confirmed), so a retry with its Idempotency-Key
    can ask the store whether it landed and answer as it would have."""

    doc: Any = None
    event: dict[str, Any] | None = None
    done: Any = None
    #: the request's Idempotency-Key now names the write (a retry with it resolves it)
    key_kept = False


class EarlierLanded(StateError):
    """A retry's write (after `outcome_unknown`) found the write it stands in for in the
    store's state: the first attempt's commit landed after the retry asked. Nothing was
    done by the retry; it answers with the first attempt's result."""


class NotDurable(StateError):
    """A change is committed on the primary (and in force) but fewer replicas than
    `state.min_replicas` confirmed it in time: a failover now could lose it."""

    def __init__(self, generation: int, confirmed: int, required: int, timeout: float) -> None:
        self.generation = generation
        #: the audit event of the change this call committed (None: a no-op confirming
        #: an earlier commit, e.g. a retry's): it is in force, and so is what it did
        self.event: dict[str, Any] | None = None
        self.doc: Any = None  # (with `event`: the state it committed)
        #: what the call would have answered (admin/writes.py Done), with `event`: its
        #: Idempotency-Key keeps it, and a retry answers with it once it is confirmed
        self.done: Any = None
        super().__init__(
            f"generation {generation} is in force, but {confirmed} of the {required} required "
            f"redis replicas confirmed it within {timeout * 1000:g} ms, so a failover now could "
            "lose it; retry the same call (it is idempotent) until it is confirmed. If retries "
            f"keep failing, the redis primary has fewer than {required} replica(s) attached "
            "(after a failover: until a replica rejoins it): check `INFO replication` "
            "(connected_slaves) on it and bring a replica back")


class AuditError(KillgateError):
    pass


class DomainError(KillgateError):
    """A change the state does not allow; `type` is a stable machine-readable word."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


class UnknownVersion(DomainError):
    def __init__(self, route: str, version: str) -> None:
        super().__init__("unknown_version", f"route {route!r} has no version {version!r}")


class InvalidChange(DomainError):
    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message)


class ConflictingState(DomainError):
    pass


class BadCursor(DomainError):
    """`before` is not a cursor this audit trail gives out (its form: another store's, or
    made up; a local trail's: no event of it): a script paging the trail must hear it,
    not take an empty page for its end."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_cursor", message + " (a cursor is the `next` of the previous "
                         "page of GET /v1/audit from this gateway's store; leave `before` "
                         "out for the newest page)")


class UnknownDrill(DomainError):
    def __init__(self, drill: str, message: str | None = None) -> None:
        super().__init__("unknown_drill", message or f"no open drill {drill!r}")


class ApiError(KillgateError):
    def __init__(self, status: int, type_: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After on a 429
        super().__init__(f"{status} {type_}: {message}")


class Unauthenticated(ApiError):
    def __init__(self, type_: str = "invalid_token") -> None:
        super().__init__(401, type_, "a valid bearer token is required")


class Forbidden(ApiError):
    def __init__(self, scope: str) -> None:
        super().__init__(403, "forbidden", f"the token lacks the scope {scope!r}")


class UpstreamError(KillgateError):
    """Base for backend failures; `delivered` says whether any request byte left us,
    `backend_fault` whether it counts against the backend's health."""

    delivered = True
    backend_fault = True
    cuts = False  # True: the answer stops at once, bytes already read included (a kill)

    def kind(self) -> str:
        """The `kind` label of `killgate_upstream_errors_total`."""
        return "connect" if not self.delivered else type(self).__name__


class UpstreamConnectError(UpstreamError):
    delivered = False


class UpstreamOverflow(UpstreamError):
    """Every connection to the backend is busy and its queue of waiting requests is full:
    refused at once (our limit, not the backend's failure)."""

    delivered = False
    backend_fault = False

    def kind(self) -> str:
        return "overflow"


class UpstreamQueueTimeout(UpstreamOverflow):
    """Waited the connect timeout in the backend's queue and no connection came free:
    our queue's overflow too (503 `overloaded`), not the backend failing. Counted against
    the backend, it would eject a busy but healthy version under load and push its
    traffic onto the others."""

    def kind(self) -> str:
        return "queue_timeout"


class UpstreamTimeout(UpstreamError):
    def __init__(self, phase: str, delivered: bool = True) -> None:
        self.phase = phase
        self.delivered = delivered
        super().__init__(f"{phase} timeout")

    def kind(self) -> str:
        return "timeout"


class UpstreamProtocolError(UpstreamError):
    pass


class ClientTimeout(UpstreamError):
    """The route's total deadline passed while a streamed request body was awaited from
    the client: the client's delay (the request answers 408), never the backend's."""

    backend_fault = False

    def kind(self) -> str:
        return "client_timeout"


class UpstreamClosed(UpstreamError):
    """The backend closed or reset the connection before its answer was complete."""

    #: after the answer's head had arrived: the backend processed the request (it answered)
    mid_answer = False


class UpstreamStale(UpstreamClosed):
    """A pooled keep-alive connection closed with no answer byte after it took the request:
    the backend closed it idle as the request went out, or crashed or gave up while it
    processed it (the gateway cannot tell which): tried once more, fresh, only when the
    request is safe to send twice (dataplane/attempts.py)."""


class DrillFault(UpstreamError):
    """A drill's fault, met by a request carrying a valid drill token (never a user's):
    nothing was sent, and it says nothing about the backend's health."""

    delivered = False
    backend_fault = False

    def __init__(self) -> None:
        super().__init__("a drill fault (this request carries a drill token)")

    def kind(self) -> str:
        return "drill_fault"
