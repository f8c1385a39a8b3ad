"""A data-plane connection's rules: head limits, field-name kinds (learned once per spelling),
refusals and their JSON answer, the deadlines' settings (`Limits`), and the `Handler` (proxy)
and `Server` (listener) interfaces it is handed. Pure: no I/O; imports request.py for types,
nothing of the connection's own (protocol.py is above it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from gateway.dataplane.clock import Clock
from gateway.dataplane.fieldrules import CONN, DROP, KEEP, REQUEST_DROP, VIA_FIELD, action
from gateway.dataplane.peercap import PeerCap
from gateway.dataplane.request import Request

__all__ = ["BODY_HIGH", "MAX_HEAD", "MAX_HEADERS", "MAX_LINE", "SLICE", "SMALL_BODY", "Drainable",
           "Handler", "Limits", "Refuse", "Server", "Stop", "carried", "error_response",
           "name_kind"]

MAX_LINE = 8190       # a request line or one field (aiohttp's and nginx's 8 KiB)
MAX_HEADERS = 128
MAX_HEAD = 64 * 1024  # the whole head (Envoy's default is 60 KiB)
SMALL_BODY = 64 * 1024  # a body up to this size is read whole before the request goes on
SLICE = 4096  # a larger read is parsed in slices of this size (its bodies in one piece)
BODY_HIGH = 256 * 1024  # buffered body bytes past which reading pauses


@dataclass(frozen=True, slots=True)
class Limits:
    """A connection's deadlines (`server.*` in the config), in seconds."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    body_timeout: float = 30.0
    #: bytes/s a request body not read whole before its request goes on (chunked, over
    #: SMALL_BODY, or 100-continue) must keep up, averaged over the body so far, after a
    #: grace of `body_timeout` (Apache's mod_reqtimeout `MinRate`): by `t` seconds of reading
    #: (the clock stopped while we do not read), `(t - body_timeout) * body_min_rate` bytes.
    #: 0: off (only the pause between bytes, `body_timeout`, and the route's total bound it)
    body_min_rate: float = 1024.0
    #: a client holding up an answer (its socket full, or the rest of one left once idle)
    #: is looked at this often: dropped when it took nothing since the last look, or when it
    #: averages less than `body_min_rate` since the wait began, after this long of grace
    send_timeout: float = 60.0
    #: a connection closed while the client may still be sending (an answer given before
    #: its request's body was read: 413, 404, a refusal) is half-closed and what comes is
    #: read and dropped until the client ends its side, nothing comes for `linger_timeout`,
    #: or `linger_time` has passed (nginx's lingering close and its defaults)
    linger_timeout: float = 5.0
    linger_time: float = 30.0


class Handler(Protocol):
    """The proxy, as a connection sees it."""

    def handle(self, req: Request) -> None:
        """Take a request (its head, and its body when small): answer now or later."""

    def gone(self, req: Request) -> None:
        """The client went away before the answer was over: drop whatever serves it."""

    def done(self, req: Request) -> None:
        """The request is over (answered, or its client gone): once per handled request."""


class Drainable(Protocol):
    """A connection as its listener holds it (`protocol.HttpProtocol`)."""

    def shutdown(self) -> None:
        """Graceful drain: close now if idle, else after the answer in progress."""

    def abort(self) -> None:
        """Close at once (what is left after the drain timeout)."""

    def spare(self) -> float | None:
        """When closing it now loses no request (idle between requests, a head still
        arriving, or lingering after its last answer): how soon it would end anyway (its
        deadline; the sooner, the first closed to make room at the cap). None when a
        request is in progress."""

    @property
    def remote(self) -> str | None:
        """The peer's address; None when the socket gives none (the per-client cap
        counts those as "")."""


class Server(Protocol):
    """What a connection needs of its listener (`dataplane/listener.py`)."""

    limits: Limits
    handler: Handler
    clock: Clock
    connections: set[Drainable]
    max_connections: int

    def full(self) -> bool:
        """At `max_connections` with no room made: the new connection is refused."""
    #: `server.max_connections_per_client` (None: off, the default; then `forget` is the
    #: plain one and a connection pays one attribute check for it, at accept)
    per_client: PeerCap | None
    draining: bool
    #: shutting down (the drain, or the delay before it): each request begun from now on
    #: is its connection's last
    winding_down: bool

    def counted(self, what: str) -> None:
        """Count an event of the listener's (refused, send_timeout, malformed)."""

    def forget(self, conn: Drainable) -> None:
        """`conn` has closed."""


# Names that, with `_` read as `-` (CGI, WSGI and some frameworks do), would change how a
# backend frames or routes a request: such a field is refused, never forwarded.
_UNDERSCORE_ALIASES = frozenset({
    b"content-length", b"transfer-encoding", b"host", b"connection", b"upgrade", b"expect",
    b"te", b"trailer", b"keep-alive", b"proxy-connection", b"x-forwarded-for",
    b"x-forwarded-host", b"x-forwarded-proto", b"forwarded", b"x-real-ip"})


#: PLAIN: nothing to the connection, forwarded as is (`Request.kept`); DROPPED: nothing to
#: the connection, not forwarded (`fieldrules.REQUEST_DROP`'s rules: x-forwarded-*, hop-by-hop
#: fields...); CONNECTION, VIA: the backend's head is built by a pass over all the fields
#: (`requesthead.request_head`), unless the CONNECTION field says `keep-alive` or `close`
#: alone (`headrules.head_field`). The kinds named in `_KINDS` are dropped too, but the
#: client's traceparent, forwarded unless the request is traced, and CLOSE. A `Proxy-Connection` field
#: is of kind CONNECTION too (dropped by that pass): llhttp reads its `close` as
#: `Connection`'s, and a head with neither is known to keep its connection alive
#: (`Parsing.on_headers_complete` asks llhttp only when it has one).
#: CLOSE: a field named `Close` (reserved, RFC 7230 §8.1: it would clash with the `close`
#: option), which `Connection: close` names: it takes the pass too, forwarded or not.
(PLAIN, HOST, LENGTH, CHUNKED, EXPECT, UPGRADE, ALIASED, TRACEPARENT, DROPPED, CONNECTION, VIA,
 CLOSE) = range(12)
_KINDS = {b"host": HOST, b"content-length": LENGTH, b"transfer-encoding": CHUNKED,
          b"expect": EXPECT, b"upgrade": UPGRADE, b"traceparent": TRACEPARENT,
          b"proxy-connection": CONNECTION, b"close": CLOSE}
_ACTS = {KEEP: PLAIN, DROP: DROPPED, CONN: CONNECTION, VIA_FIELD: VIA}
assert all(n in REQUEST_DROP for n in _KINDS if n not in (b"traceparent", b"close"))


#: a field name as sent -> what it is to us, learned once per spelling (`name_kind`). An
#: exact dict: a subscript of a dict subclass (one with `__missing__`) is a method call
#: through the type's `__getitem__` (about 450 CPU instructions a field more), while the
#: interpreter specialises one of a dict; the parser callback reads `NAMES[name]` and asks
#: `name_kind` only for a spelling it has not seen
NAMES: dict[bytes, int] = {}


def name_kind(name: bytes) -> int:
    """What a field name is to the connection (see the kinds above); remembered."""
    try:
        return NAMES[name]
    except KeyError:
        pass
    low = name.lower()
    kind = _KINDS.get(low)
    if kind is None:
        kind = _ACTS[action(low, REQUEST_DROP, answer=False)]
    if b"_" in low:
        alias = low.replace(b"_", b"-")
        if alias in _UNDERSCORE_ALIASES or alias.startswith((b"x-killgate-", b"x-forwarded-")):
            kind = ALIASED
    if len(NAMES) >= 4096:  # names a client invents are bounded: start over
        NAMES.clear()
    NAMES[name] = kind
    return kind


class Refuse(Exception):
    """A request refused as it is parsed (its status and message)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class Stop(Exception):
    """Bytes after a request that ends the connection are not parsed."""


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large",
            500: b"Internal Server Error"}
_TYPES = {400: "bad_request", 408: "request_timeout", 413: "body_too_large",
          500: "internal_error"}


def error_response(status: int, message: str, method: bytes = b"") -> bytes:
    """A refusal of the connection's own (no route decided): JSON, then the close. To a
    HEAD request (`method`), its head alone: an answer to HEAD has no content (RFC 9112
    §6.3), and a client reads the next answer where this one's head ends."""
    body = json.dumps({"error": {"type": _TYPES.get(status, "bad_request"),
                                 "message": message}}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b"Error"),
                                              len(body), b"" if method == b"HEAD" else body))


def carried(held_s: float, taken: int, limits: Limits) -> int:
    """`taken` (bytes a client took in `held_s` seconds of holding up answers) as counted
    towards `deadlines.send_due`: at most one `send_timeout` ahead of `body_min_rate`. Each byte above
    the rate bought time without limit: 1 MB taken at once against 100 KB/s banked 10 s,
    read at a byte a look after (a slow-read attack after one fast burst; minutes with a
    big answer). Pure."""
    rate = limits.body_min_rate
    return min(taken, int((held_s + limits.send_timeout) * rate)) if rate else taken
