"""A model backend's failures: the branch of gateway/errors.py's tree under UpstreamError.

Owns what the data plane tells apart of a failed exchange: whether any request byte left
(`delivered`: safe to try another version), whether it counts against the backend's health
(`backend_fault`), and the `kind` label it is counted under. Raised in dataplane/ (its
exchange and pools translate socket and parser errors), answered by dataplane/answers.py.
Imports only errors_base.py; import them from gateway.errors.
"""

from __future__ import annotations

from gateway.errors_base import KillgateError

__all__ = ["ClientTimeout", "DrillFault", "UpstreamClosed", "UpstreamConnectError",
           "UpstreamError", "UpstreamOverflow", "UpstreamProtocolError", "UpstreamQueueTimeout",
           "UpstreamStale", "UpstreamTimeout"]


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
