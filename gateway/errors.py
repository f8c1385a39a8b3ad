"""The one exception tree of killgate: every error, importable from here.

Third-party exceptions are translated at the boundary of the one module that uses that
library (httptools, the backends' client → dataplane/exchange.py, redis → state/redis.py,
jwt → admin/auth.py). `gateway.admin.api` and `gateway.dataplane.answers` are the only places
that map them to HTTP; the domain's own errors (DomainError) carry no HTTP status. Defined
here: config, audit, domain and admin errors; the store's branch in errors_store.py, the
backends' in errors_upstream.py, the base in errors_base.py (all named here too).

    KillgateError
    ├── ConfigError              a config file is unusable; .problems lists (yaml path, message)
    ├── ConfigUnsettled          a config file is still being written: read it later (.reason)
    ├── StateError               the state store could not do what was asked
    │   ├── StoreUnavailable     could not reach it / timed out (retry later)
    │   │   ├── StoreUnverifiable it answers, but holds a document this instance cannot
    │   │   │   │                 verify and will not write over (its key: another instance)
    │   │   │   └── StoreFromNewerVersion ... one a newer version wrote (format, fields)
    │   │   ├── StoreOutcomeUnknown a commit's answer was lost: it may have landed
    │   │   ├── StoreBusy        it answers -LOADING or -BUSY: runs no command now (retry)
    │   │   │   └── StoreRefusesWrites ... -NOREPLICAS: reads work, every write refused
    │   │   └── PushesCut        it answers, but its subscription was refused or cut
    │   ├── StoreConflict        a compare-and-set lost a race (retry at once)
    │   ├── EarlierLanded        a retry's write found its first attempt's in the state
    │   └── NotDurable           committed and in force, on too few replicas yet
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
        ├── UpstreamOverflow     every connection busy, its queue full: our limit (never sent)
        │   └── UpstreamQueueTimeout waited the connect timeout in that queue
        ├── UpstreamTimeout      connect / idle-read / total deadline passed
        ├── UpstreamProtocolError the backend's answer was malformed (502)
        ├── ClientTimeout        the client's streamed body came too slowly (408)
        ├── UpstreamClosed       the backend closed or reset after the request was sent
        │   └── UpstreamStale    ...on a reused keep-alive connection, before any answer byte
        └── DrillFault           a drill's fault met by a drill request (never sent)
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors_base import KillgateError
from gateway.errors_store import (
    EarlierLanded,
    NotDurable,
    PushesCut,
    StateError,
    StoreBusy,
    StoreConflict,
    StoreFromNewerVersion,
    StoreOutcomeUnknown,
    StoreRefusesWrites,
    StoreUnavailable,
    StoreUnverifiable,
)
from gateway.errors_upstream import (
    ClientTimeout,
    DrillFault,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamQueueTimeout,
    UpstreamStale,
    UpstreamTimeout,
)

__all__ = [
    "ApiError",
    "AuditError",
    "BadCursor",
    "ClientTimeout",
    "ConfigError",
    "ConfigUnsettled",
    "ConflictingState",
    "DomainError",
    "DrillFault",
    "EarlierLanded",
    "Forbidden",
    "InvalidChange",
    "KillgateError",
    "NotDurable",
    "Problem",
    "PushesCut",
    "StateError",
    "StoreBusy",
    "StoreConflict",
    "StoreFromNewerVersion",
    "StoreOutcomeUnknown",
    "StoreRefusesWrites",
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
    "unknown_version",
]


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


class AuditError(KillgateError):
    pass


class DomainError(KillgateError):
    """A change the state does not allow; `type` is a stable machine-readable word."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(message)


class UnknownVersion(DomainError):
    def __init__(self, route: str, version: str, versions: list[str] | None = None) -> None:
        super().__init__("unknown_version", unknown_version(route, version, versions))
        self.bare = unknown_version(route, version)  # (for a caller who may not read names)


def unknown_version(route: str, version: str, versions: list[str] | None = None) -> str:
    """The words of a 404 `unknown_version`, naming the route's versions when known (a
    new user's `weights chat v3=10` said only "route 'chat' has no version 'v3'")."""
    said = f"route {route!r} has no version {str(version)[:64]!r}"
    if versions:
        said += "; its versions: " + ", ".join(repr(v) for v in versions[:16]) + (
            ", ..." if len(versions) > 16 else "")
    return said


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
