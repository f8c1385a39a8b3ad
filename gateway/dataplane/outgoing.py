"""What a flight asks of the proxy besides the decision: the head for the backend (with the
x-forwarded-* lines of the peer, or of the chain trusted proxies vouch for, and our
traceparent), the route's retry policy and budget, the shadow tap of an answer, and whether
a kill came after the request was routed (`killed_since`).

A mixin of `Proxy` (dataplane/proxy.py), which owns the state read here.
"""

from __future__ import annotations

from gateway.dataplane.attempts import Policy
from gateway.dataplane.fieldrules import VIA_LINE
from gateway.dataplane.inflight import Aborted
from gateway.dataplane.lengths import HEAD_ENDS, head_end
from gateway.dataplane.ports import Forwarding, TableSource
from gateway.dataplane.request import Request
from gateway.dataplane.requesthead import request_head
from gateway.dataplane.retry import RetryBudget
from gateway.dataplane.shadow import Mirror
from gateway.dataplane.shadowtap import Tap
from gateway.domain.routing import RoutePlan, Target
from gateway.domain.statedoc import kill_key
from gateway.forwarded import ClientAddress

__all__ = ["CACHED_TARGET", "CACHE_MAX", "Outgoing", "forwarded_for"]

CACHE_MAX = 1024  # request targets and hosts remembered as parsed (cleared when full)
CACHED_TARGET = 256  # longer targets are parsed every time (the cache stays small)


class Outgoing:
    holder: TableSource
    client_address: ClientAddress | None
    scheme_b: bytes
    shadow: Mirror | None
    peek_bytes: int
    _forwarded: dict[tuple[bytes, bytes | None], bytes]
    _policies: dict[str, tuple[object, Policy]]
    _budgets: dict[str, RetryBudget]

    def killed_since(self, plan: RoutePlan, version: str) -> Aborted | None:
        """Whether a kill applied after `plan` routed a request covers `version` or the
        route: asked before an attempt that did not follow the routing at once (a body read
        first, a wait for a connection, a failover), which must not reach what was killed
        meanwhile, whether or not the kill cuts requests in flight. The same plan object
        in the table now: nothing of this route changed (a kill rebuilds its plan). Else
        the kills in force say, also when a reload has removed the route or the version."""
        table = self.holder.held.table
        now = table.by_name.get(plan.name)
        if now is plan:
            return None
        if now is not None and now.killed is not None:  # (fail-closed included)
            return Aborted("killed", now.killed)
        kills = table.doc.kills
        if "global" in kills:
            return Aborted("killed", "global")
        for name in (plan.name, plan.config.drill_for):  # (a drill route's: see tablebuild)
            if name is None:
                continue
            for scope, key in (("route", kill_key("route", name)),
                               ("version", kill_key("version", name, version))):
                if key in kills:
                    return Aborted("killed", scope)
        return None

    def policy(self, plan: RoutePlan) -> Policy:
        """The route's retry settings as the attempts plan wants them (cached per settings:
        the plan's copy, as every read here, is a slot, not a config model's attribute)."""
        retry = plan.retry
        cached = self._policies.get(plan.name)
        if cached is not None and cached[0] is retry:
            return cached[1]
        policy = Policy() if retry is None else Policy(frozenset(retry.retry_on), retry.attempts)
        self._policies[plan.name] = (retry, policy)
        return policy

    def budget(self, plan: RoutePlan) -> RetryBudget | None:
        if plan.retry is None:
            return None
        b = self._budgets.get(plan.name)
        if b is None:
            b = self._budgets[plan.name] = RetryBudget()
        return b

    def request_head(self, req: Request, target: Target, host_line: bytes,
                     length: int | None, raw_target: bytes,
                     traceparent: bytes | None = None, body: bytes = b"") -> bytes:
        """The head for the backend (and `body`, when given, after it in the same bytes).
        `host_line`: the pool's, the request line's end and our Host field."""
        # the request line and our Host as parts (joined once, with the rest of the head;
        # few: a join costs ~140 CPU instructions a part, so the constant ones are joined
        # once, in `Target.line_path` and `Pool.host_line`)
        first = [req.method, target.line_path, raw_target, host_line]
        conn = req.conn  # (`_forwarded_of`'s usual answer, inline: the connection's lines)
        fwd = conn.fwd_lines if req.host == conn.fwd_host and self.client_address is None \
            else self._forwarded_of(req)
        if traceparent is not None:  # ours replaces the client's: the backend joins our span
            fwd += b"traceparent: %s\r\n" % traceparent
            if req.reread or req.traceparent is not None:
                return request_head(first, req.raw_headers, fwd, length, True, body)
        elif req.reread:  # (all positional: a call with keywords is not specialised)
            return request_head(first, req.raw_headers, fwd, length, False, body)
        # The fields the parser sorted as they came (`Request.kept`: the parts of those
        # forwarded as is, in order; no `Connection` or `Via` among them, no traceparent of
        # the client's when `fwd` carries ours): `request_head`'s bytes without a second
        # pass over the fields (tests/test_requesthead_kept.py), built here, a call less
        first += req.kept
        if length is not None:
            try:  # (a subscript costs less than a `get` call, or than formatting the line)
                framing = HEAD_ENDS[length]
            except KeyError:
                framing = head_end(length)
        else:
            framing = b"transfer-encoding: chunked\r\n\r\n"
        first += (VIA_LINE, fwd, framing, body)
        return b"".join(first)

    def _forwarded_of(self, req: Request) -> bytes:
        """The x-forwarded-* lines `req` carries to its backend (and its shadow copy)."""
        trusted = self.client_address  # behind trusted proxies: the chain they vouch for
        if trusted is not None:
            return self._forwarded_lines(trusted.forwarded_for(
                req.remote, forwarded_for(req)).encode(), req.host)
        # the x-forwarded-* lines of a socket peer and Host: the connection's, when its
        # Host is the one before (most requests: no key is built and hashed, ~750 CPU
        # instructions), else from a bounded cache (the same few pairs, request after
        # request, also over short-lived connections)
        host = req.host
        conn = req.conn
        if host == conn.fwd_host:
            return conn.fwd_lines
        key = (conn.remote_b, host)
        try:
            fwd = self._forwarded[key]
        except KeyError:
            fwd = self._forwarded_lines(conn.remote_b, host)
            if host is not None and len(host) > CACHED_TARGET:
                return fwd  # (nor the connection's: an idle one holds no 8 KiB Host, twice)
            if len(self._forwarded) >= CACHE_MAX:
                self._forwarded.clear()
            self._forwarded[key] = fwd
        conn.fwd_host, conn.fwd_lines = host, fwd
        return fwd

    def _forwarded_lines(self, xff: bytes, host: bytes | None) -> bytes:
        fwd = b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (xff, self.scheme_b)
        if host:
            fwd += b"x-forwarded-host: %s\r\n" % host
        return fwd

    def tap(self, flight: Forwarding) -> Tap | None:
        """A shadow copy's tap on this answer, when the route has a shadow and samples it."""
        if flight.plan.shadow_config is None or self.shadow is None:
            return None
        req = flight.req
        # the x-forwarded-* lines the client's request carried (the copy is that request)
        return self.shadow.tap(flight.plan, flight.target, req.method, flight.raw_target,
                               list(req.raw_headers), flight.prefix, flight.complete,
                               flight.field, self._forwarded_of(req), flight.started,
                               self.peek_bytes, req.span, req.traceparent)

def forwarded_for(req: Request) -> list[str]:
    """Every X-Forwarded-For field of the request, as sent."""
    return [v.decode("latin-1") for n, v in req.raw_headers if n.lower() == b"x-forwarded-for"]
