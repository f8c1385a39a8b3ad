"""The data plane: match a route, choose a version, forward, stream the answer back.

Owns the request path of CONTRACT §3. Reads the routing snapshot once per request from
the `TableHolder` (no I/O for any decision), talks to backends only through
`gateway.dataplane.upstream`, and is the one place that maps data-plane errors to HTTP. Streams
never end in a way that looks like success when they did not succeed: SSE gets a final
`killgate.error` event, any other body an aborted connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

from gateway.dataplane.attempts import (
    ANSWER,
    ANSWERED,
    MALFORMED,
    MOVE,
    OVERFLOW,
    RESET,
    STALE,
    TIMEOUT,
    UNDELIVERED,
    Outcome,
    Policy,
    SoFar,
    next_attempt,
)
from gateway.dataplane.attempts import (
    KILLED as KILLED_OUTCOME,
)
from gateway.dataplane.bodies import BodyReader, BodyTimeout, BodyTooLarge
from gateway.dataplane.headers import (
    declared_charset,
    request_head,
    response_head,
    response_multidict,
    undecodable,
)
from gateway.dataplane.inflight import Aborted, Handle, Inflight
from gateway.dataplane.jsonpeek import ModelField, Unreadable, find_model, rewrite_model
from gateway.dataplane.notready import MAX_BODY as NOT_READY_MAX
from gateway.dataplane.notready import could_be_not_ready, is_not_ready
from gateway.dataplane.paths import BadTarget, route_host, split_target
from gateway.dataplane.retry import RetryBudget
from gateway.dataplane.sse import EventCutter
from gateway.dataplane.upstream import Exchange, Upstreams
from gateway.domain.routing import FAILOVER, FALLBACK, KILLED, Choice, RoutePlan, RouteTable, Target
from gateway.errors import (
    UpstreamClosed,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamStale,
    UpstreamTimeout,
)
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["Observer", "Proxy"]

log = logging.getLogger("killgate.proxy")

SMALL_BODY = 64 * 1024  # bodies up to this size are read first, so they can move versions
_JSON = "application/json"


class TableSource(Protocol):
    """Where the current routing snapshot is read (control/table.py's `TableHolder`)."""

    @property
    def table(self) -> RouteTable: ...


class Observer(Protocol):
    """Hook for passive health (outlier detection) and canary analysis: told how each
    exchange went. `kind`: "ok", "5xx", "connect" (never reached the backend), "error",
    or "overflow" (our queue for that backend was full or timed out: not its failure)."""

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None: ...


def _error_body(type_: str, message: str, **extra: object) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message, **extra}}).encode()


def _sse_error(type_: str, route: str, version: str | None) -> bytes:
    data = json.dumps({"type": type_, "route": route, "version": version})
    return f"event: killgate.error\ndata: {data}\n\n".encode()


class Proxy:
    """The data-plane request handler (an aiohttp low-level `web.Server` handler)."""

    def __init__(self, holder: TableSource, upstreams: Upstreams, inflight: Inflight,
                 metrics: Metrics, max_body: int, peek_bytes: int,
                 observer: Observer | None = None, scheme: str = "http",
                 body_timeout: float = 30.0, max_inflight: int = 10_000) -> None:
        self.max_inflight = max_inflight
        self.bodies = BodyReader(max_body, peek_bytes, body_timeout)
        self.holder = holder
        self.upstreams = upstreams
        self.inflight = inflight
        self.metrics = metrics
        self.observer = observer
        self.scheme_b = scheme.encode()
        self.rand = random.random
        self.loop = asyncio.get_running_loop()
        # requests answered, by (route, version, decision, status): read by /metrics
        self.counts: dict[tuple[str, str, str, int], int] = {}
        self._labels: dict[tuple[str, str, str, int], bytes] = {}  # x-killgate-* lines
        self._budgets: dict[str, RetryBudget] = {}
        self._policies: dict[str, tuple[object, Policy]] = {}
        metrics.collector(self._collect)

    def _collect(self, metrics: Metrics) -> None:
        for (route, version, decision, status), n in list(self.counts.items()):
            metrics.set("killgate_requests_total", n, (route, version, decision, str(status)),
                        label_names=("route", "version", "decision", "code"))

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        inflight = self.inflight
        if inflight.count >= self.max_inflight:
            # Shed at once (RELIABILITY row 40): admitted requests keep their latency.
            self.metrics.inc("killgate_requests_shed_total")
            return self._error(503, "overloaded", "this gateway is at its limit of requests "
                               "in flight; retry shortly", extra_headers={"retry-after": "1"})
        inflight.count += 1
        try:
            return await self._handle(request, self.holder.table)
        except BodyTimeout:
            return self._error(408, "request_timeout",
                               f"the request body stalled for {self.bodies.timeout:g}s",
                               extra_headers={"connection": "close"})
        finally:
            inflight._done()

    # ------------------------------------------------------------------ responses

    def _reply(self, status: int, body: bytes, route: str | None, version: str | None,
               decision: str | None, extra: dict[str, str] | None = None,
               content_type: str = _JSON) -> web.Response:
        h: CIMultiDict[str] = CIMultiDict()
        h[hdrs.CONTENT_TYPE] = content_type
        if route is not None:
            h["x-killgate-route"] = route
        if version is not None:
            h["x-killgate-version"] = version
        if decision is not None:
            h["x-killgate-decision"] = decision
        if extra:
            h.update(extra)
        key = (route or "", version or "", decision or "", status)
        self.counts[key] = self.counts.get(key, 0) + 1
        return web.Response(status=status, body=body, headers=h)

    def _error(self, status: int, type_: str, message: str, route: str | None = None,
               version: str | None = None, decision: str | None = None,
               extra_headers: dict[str, str] | None = None, **extra: object) -> web.Response:
        return self._reply(status, _error_body(type_, message, **extra), route, version, decision,
                           extra_headers)

    def _unavailable(self, plan: RoutePlan, decision: str, scope: str | None = None) -> web.Response:
        """Killed or nothing can serve: the route's fallback, else a 503."""
        fb = plan.fallback
        if fb is not None:
            return self._reply(fb.status, plan.fallback_body, plan.name, None, decision,
                               dict(fb.headers))
        if decision == KILLED:
            return self._error(503, "killed", "this model route is disabled", plan.name, None,
                               KILLED, scope=scope or plan.killed or "route")
        return self._error(503, "unavailable", "no version of this route can serve right now",
                           plan.name, None, decision)

    # ------------------------------------------------------------------ request path

    async def _handle(self, request: web.BaseRequest, table: RouteTable) -> web.StreamResponse:
        headers = request.headers
        if request.version < HttpVersion11 and hdrs.TRANSFER_ENCODING in headers:
            return self._error(400, "bad_request",
                               "Transfer-Encoding is not allowed in HTTP/1.0 requests")
        if hdrs.UPGRADE in headers or request.method == "CONNECT":
            return self._error(400, "bad_request", "protocol upgrades are not proxied")
        cl = request.content_length
        if cl is not None and cl > self.bodies.max_body:
            return self._error(413, "body_too_large",
                               f"the request body exceeds {self.bodies.max_body} bytes")
        try:
            path, target = split_target(request.raw_path)
            host = route_host(headers.get("host"))
        except BadTarget as exc:
            return self._bad("target", str(exc))
        if undecodable(headers.values()) is not None:
            return self._bad("header_encoding", "a header value is not valid UTF-8")
        prefix: bytes | None = None
        field: ModelField | None = None
        model: str | None = None
        if table.needs_model(path, host, headers):
            charset = declared_charset(headers.get("content-type"))
            if charset is not None and charset not in ("utf-8", "utf8"):
                return self._bad("model_body", f"the body is declared {charset!r}; a route "
                                 "chosen by the body's 'model' reads JSON as UTF-8 only")
            prefix = await self.bodies.prefix(request, cl)
            if prefix is None:
                return self._error(413, "body_too_large",
                                   f"the request body exceeds {self.bodies.max_body} bytes")
            complete = len(prefix) == cl if cl is not None else request.content.at_eof()
            peek = self.bodies.peek_bytes  # the window, exactly: however the bytes arrived
            try:
                field = find_model(prefix[:peek], complete and len(prefix) <= peek)
            except Unreadable as exc:
                return self._bad("model_body", str(exc))
            model = field.value if field else None
        plan = table.match(path, host, headers, model)
        if plan is None:
            return self._error(404, "no_route", f"no route matches {request.method} {path}")
        pin = headers.get("x-killgate-pin") if plan.allow_pin else None
        if pin is not None and pin not in plan.targets:
            return self._error(400, "unknown_version",
                               f"x-killgate-pin names no version of route {plan.name!r}",
                               plan.name)
        sticky = headers.get(plan.sticky_header) if plan.sticky_header else None
        choice = plan.choose(sticky, pin, self.rand)
        if choice[0] is None:
            return self._unavailable(plan, choice.decision)
        # Small bodies are read up front: a request not yet delivered can move versions.
        if prefix is None:
            if not request.body_exists:
                prefix = b""
            elif cl is None or cl <= SMALL_BODY:
                prefix = await self.bodies.prefix(request, cl, SMALL_BODY)
                if prefix is None:
                    return self._error(413, "body_too_large",
                                       f"the request body exceeds {self.bodies.max_body} bytes",
                                       plan.name)
        return await self._forward(request, plan, choice, prefix, field, cl, target, path)

    def _bad(self, reason: str, message: str) -> web.Response:
        """A request refused for its shape: 400, counted, logged at debug (a client can send
        these at will: never a warning or a traceback per request)."""
        self.metrics.inc("killgate_bad_requests_total", (reason,), label_names=("reason",))
        event(log, "bad_request", logging.DEBUG, reason=reason, message=message)
        return self._error(400, "bad_request", message)

    def _head(self, request: web.BaseRequest, target: Target, host_header: bytes,
              length: int | None, raw_target: str) -> bytes:
        first = b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (
            request.method.encode(), target.path_bytes, raw_target.encode("latin-1"),
            host_header)
        host = request.headers.get("host")
        fwd = b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (
            (request.remote or "unknown").encode(), self.scheme_b)
        if host:
            fwd += b"x-forwarded-host: %s\r\n" % host.encode("latin-1")
        return request_head(first, request.raw_headers, fwd, length)

    async def _forward(self, request: web.BaseRequest, plan: RoutePlan, choice: Choice,
                       prefix: bytes | None, field: ModelField | None,
                       cl: int | None, raw_target: str, path: str) -> web.StreamResponse:
        rc = plan.config
        timeouts = rc.timeouts
        loop = self.loop
        deadline = loop.time() + timeouts.total
        # Is the whole body in memory (replayable), or does a tail stream after `prefix`?
        complete = prefix is not None and (
            (cl is not None and len(prefix) == cl) or (cl is None and request.content.at_eof()))
        handle = Handle(plan.name)
        handles = self.inflight.handles
        handles.add(handle)
        target = choice.target
        assert target is not None
        first = target
        decision = choice.decision
        policy = self._policy(plan)
        protocol = rc.protocol
        budget = None
        if rc.retry is not None:
            budget = self._budgets.get(plan.name)
            if budget is None:
                budget = self._budgets[plan.name] = RetryBudget()
            budget.request(loop.time())
        so_far = SoFar()
        targets: tuple[Target, ...] | None = None
        try:
            while True:
                body = prefix
                if field is not None and target.model and body is not None:
                    body = rewrite_model(body, field, target.model)
                if complete:
                    length: int | None = len(body) if body is not None else 0
                    send_body: bytes | AsyncIterator[bytes] | None = body
                else:
                    length = None if cl is None else cl + (len(body or b"") - len(prefix or b""))
                    send_body = self.bodies.chain(body or b"", request, len(prefix or b""))
                handle.version = target.name
                started = loop.time()
                ex: Exchange | None = None
                err: UpstreamError | None = None
                try:
                    ex = await self._exchange(request, target, handle, send_body, length,
                                              deadline, timeouts.connect, timeouts.idle,
                                              raw_target)
                    not_ready = False
                    if protocol != "http" and complete and could_be_not_ready(
                            protocol, ex.status, path):
                        await ex.settle(NOT_READY_MAX)  # the error body decides
                        not_ready = ex.complete and is_not_ready(protocol, ex.status, path,
                                                                 ex.peek_body())
                except BodyTooLarge:
                    return self._error(413, "body_too_large",
                                       f"the request body exceeds {self.bodies.max_body} bytes",
                                       plan.name, target.name, decision)
                except BodyTimeout:
                    return self._error(408, "request_timeout",
                                       f"the request body stalled for {self.bodies.timeout:g}s",
                                       plan.name, target.name, decision,
                                       extra_headers={"connection": "close"})
                except Aborted as exc:
                    return self._unavailable_killed(plan, target, exc)
                except UpstreamError as exc:
                    if ex is not None:
                        ex.release()
                    ex, err = None, exc
                    self._count_error(plan, target, exc, started)
                    if handle.aborted is not None:
                        return self._unavailable_killed(plan, target, handle.aborted)
                    outcome = _outcome_of(exc)
                else:
                    if not not_ready and (ex.status < 500 or not policy.retry_on):
                        return await self._answer(request, plan, target, decision, ex, handle,
                                                  started)  # the common case: no decision
                    outcome = Outcome(ANSWERED, ex.status, not_ready)
                if targets is None:
                    targets = plan.failover_for(first.name)
                nxt = next_attempt(so_far, outcome, len(targets), complete, policy,
                                   lambda: budget is not None and budget.allow(
                                       loop.time(), rc.retry.budget if rc.retry else 0.0))
                if nxt.action == ANSWER:
                    if ex is not None:
                        return await self._answer(request, plan, target, decision, ex, handle,
                                                  started)
                    if nxt.reason == "no_other_version" and plan.fallback is not None:
                        return self._unavailable(plan, FALLBACK)
                    assert err is not None
                    return self._upstream_failed(plan, target, decision, err)
                so_far = nxt.so_far
                if ex is not None:  # an answer we will not forward: drop it
                    ex.close()
                    ex.release()
                    self._dropped(plan, target, ex.status, not_ready, started)
                if nxt.action == MOVE:
                    target = targets[so_far.moves - 1]
                    decision = FAILOVER
                    if nxt.reason.startswith("retry_"):
                        self.metrics.inc("killgate_retries_total",
                                         (plan.name, nxt.reason.removeprefix("retry_")),
                                         label_names=("route", "cause"))
                    else:
                        self.metrics.inc("killgate_failovers_total", (plan.name,),
                                         label_names=("route",))
        finally:
            handles.discard(handle)

    def _policy(self, plan: RoutePlan) -> Policy:
        """The route's retry settings as the attempts plan wants them (cached per config)."""
        rc = plan.config
        cached = self._policies.get(plan.name)
        if cached is not None and cached[0] is rc:
            return cached[1]
        retry = rc.retry
        policy = Policy() if retry is None else Policy(frozenset(retry.retry_on), retry.attempts)
        self._policies[plan.name] = (rc, policy)
        return policy

    def _dropped(self, plan: RoutePlan, target: Target, status: int, not_ready: bool,
                 started: float) -> None:
        """An answer not forwarded (the request moves on): counted for outlier detection."""
        kind = "not_ready" if not_ready else "5xx"
        if not_ready:
            self.metrics.inc("killgate_upstream_errors_total", (plan.name, target.name, kind),
                             label_names=("route", "version", "kind"))
        if self.observer is not None:
            self.observer.outcome(plan.name, target.name, kind, self.loop.time() - started)

    async def _answer(self, request: web.BaseRequest, plan: RoutePlan, target: Target,
                      decision: str, ex: Exchange, handle: Handle,
                      started: float) -> web.StreamResponse:
        if ex.complete and request.method != "HEAD":
            return self._complete(request, plan, target, decision, ex, started)
        return await self._respond(request, plan, target, decision, ex, handle, started)

    def _complete(self, request: web.BaseRequest, plan: RoutePlan, target: Target,
                  decision: str, ex: Exchange, started: float) -> web.StreamResponse:
        """The fast path: the whole answer has arrived; hand it back in one write."""
        status = ex.status
        body = ex.take_body()
        raw = ex.headers
        ex.release()
        key = (plan.name, target.name, decision, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if self.observer is not None:
            self.observer.outcome(plan.name, target.name, "5xx" if status >= 500 else "ok",
                                  self.loop.time() - started)
        tr = request.transport
        if _RAW_WRITES and tr is not None and not tr.is_closing() and status >= 200 \
                and status not in (204, 304):
            # Write the answer ourselves: the backend's raw fields go out as they came
            # (minus hop-by-hop), with no decoding and no response object to fill in.
            ours = self._labels.get(key)
            if ours is None:
                ours = self._labels[key] = (
                    b"x-killgate-route: %s\r\nx-killgate-version: %s\r\n"
                    b"x-killgate-decision: %s\r\n" % (plan.name.encode(), target.name.encode(),
                                                      decision.encode()))
            keep = request.keep_alive
            connection = (None if keep and request.version >= HttpVersion11 else
                          b"keep-alive" if keep else b"close")
            tr.write(response_head(status, raw, ours, len(body), connection) + body)
            sent = _SENT_KEEP if keep else _SENT_CLOSE
            assert sent is not None  # _RAW_WRITES
            return sent
        out = response_multidict(raw)
        out["x-killgate-route"] = plan.name
        out["x-killgate-version"] = target.name
        out["x-killgate-decision"] = decision
        return web.Response(status=status, body=body, headers=out)

    async def _exchange(self, request: web.BaseRequest, target: Target, handle: Handle,
                        body: bytes | AsyncIterator[bytes] | None, length: int | None,
                        deadline: float, connect: float, idle: float,
                        raw_target: str) -> Exchange:
        pool = self.upstreams.pools.get(target.origin) or self.upstreams.pool(target.origin)
        head = self._head(request, target, pool.host_header, length, raw_target)
        ex, reused = await pool.acquire(connect)
        if handle.aborted is not None:
            pool.release(ex)
            raise handle.aborted
        ex.begin(deadline, idle, request.method == "HEAD")
        handle.exchange = ex
        try:
            await ex.send(head, body, chunked=length is None)
            await ex.read_head()
            return ex
        except UpstreamClosed as exc:
            ex.release()
            if reused and not ex.got_bytes:
                raise UpstreamStale(str(exc)) from None  # the backend had closed it idle
            raise
        except BaseException:
            ex.release()
            raise

    def _count_error(self, plan: RoutePlan, target: Target, exc: UpstreamError,
                     started: float) -> None:
        self.metrics.inc("killgate_upstream_errors_total", (plan.name, target.name, exc.kind()),
                         label_names=("route", "version", "kind"))
        if self.observer is None:
            return
        if exc.backend_fault:
            self.observer.outcome(plan.name, target.name,
                                  "connect" if not exc.delivered else "error",
                                  self.loop.time() - started)
        elif isinstance(exc, UpstreamOverflow):
            # our queue's overflow: not the backend failing (outlier detection ignores it),
            # but canary analysis counts it: a version that cannot take its share failed it
            self.observer.outcome(plan.name, target.name, "overflow",
                                  self.loop.time() - started)

    def _unavailable_killed(self, plan: RoutePlan, target: Target, why: Aborted) -> web.Response:
        self.metrics.inc("killgate_inflight_aborted_total", (plan.name,), label_names=("route",))
        if why.scope == "version":
            return self._error(503, "killed", "this model version is disabled", plan.name,
                               target.name, KILLED, scope="version")
        return self._unavailable(plan, KILLED, why.scope)

    def _upstream_failed(self, plan: RoutePlan, target: Target, decision: str,
                         exc: UpstreamError) -> web.Response:
        if isinstance(exc, UpstreamOverflow):
            why = ("no connection to the backend came free in time"
                   if exc.kind() == "queue_timeout" else "the backend's connections and queue "
                   "are full")
            return self._error(503, "overloaded", f"{why}; retry shortly",
                               plan.name, target.name, decision,
                               extra_headers={"retry-after": "1"})
        if isinstance(exc, UpstreamTimeout):
            return self._error(504, "upstream_timeout",
                               f"the backend did not answer in time ({exc.phase} timeout)",
                               plan.name, target.name, decision)
        return self._error(502, "upstream_failed", f"the backend failed: {exc}",
                           plan.name, target.name, decision)

    async def _respond(self, request: web.BaseRequest, plan: RoutePlan, target: Target,
                       decision: str, ex: Exchange, handle: Handle,
                       started: float) -> web.StreamResponse:
        out = response_multidict(ex.headers)
        out["x-killgate-route"] = plan.name
        out["x-killgate-version"] = target.name
        out["x-killgate-decision"] = decision
        status = ex.status
        key = (plan.name, target.name, decision, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        length = _content_length(ex.headers)
        if request.method == "HEAD":
            ex.release()
            if length is not None:
                out[hdrs.CONTENT_LENGTH] = str(length)
            return web.Response(status=status, headers=out)
        sse = out.get(hdrs.CONTENT_TYPE, "").startswith("text/event-stream")
        if sse:
            out[hdrs.CACHE_CONTROL] = "no-cache"
            out["x-accel-buffering"] = "no"
        resp = web.StreamResponse(status=status, headers=out)
        if length is not None and not sse:
            resp.content_length = length
        elif request.version >= HttpVersion11:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        cutter = EventCutter() if sse else None  # SSE: forwarded as whole events
        try:
            while True:
                data = await ex.read()
                if not data:
                    break
                if cutter is not None:
                    data = cutter.feed(data)
                    if not data:
                        continue
                await resp.write(data)
        except UpstreamError as exc:
            ex.release()
            why = handle.aborted
            kind = "killed" if why is not None else "upstream_failed"
            if why is not None:
                self.metrics.inc("killgate_inflight_aborted_total", (plan.name,),
                                 label_names=("route",))
            else:
                self._count_error(plan, target, exc, started)
            if cutter is not None and not cutter.mid_event:
                await resp.write(_sse_error(kind, plan.name, target.name))
                await resp.write_eof()
                return resp
            _abort_client(request)  # the client sees an incomplete body, never a clean end
            return resp
        except ConnectionResetError:
            ex.close()  # the client went away: drop the backend exchange too
            ex.release()
            return resp
        except BaseException:
            ex.close()
            ex.release()
            raise
        if cutter is not None and (tail := cutter.flush()):
            await resp.write(tail)
        ex.release()
        if self.observer is not None:
            self.observer.outcome(plan.name, target.name, "5xx" if status >= 500 else "ok",
                                  self.loop.time() - started)
        await resp.write_eof()
        return resp


def _sent(keep_alive: bool) -> web.StreamResponse | None:
    """A response aiohttp treats as already written (we wrote it to the transport)."""
    resp = web.StreamResponse()
    if not hasattr(resp, "_eof_sent") or not hasattr(resp, "_keep_alive"):
        return None  # aiohttp changed its internals: use the regular path
    resp._eof_sent = True
    resp._keep_alive = keep_alive
    return resp


_SENT_KEEP = _sent(True)
_SENT_CLOSE = _sent(False)
_RAW_WRITES = _SENT_KEEP is not None and _SENT_CLOSE is not None


def _outcome_of(exc: UpstreamError) -> Outcome:
    """An attempt's error as the attempts plan sees it."""
    if isinstance(exc, Aborted):
        return Outcome(KILLED_OUTCOME)
    if isinstance(exc, UpstreamOverflow):
        return Outcome(OVERFLOW)
    if not exc.delivered:
        return Outcome(UNDELIVERED)
    if isinstance(exc, UpstreamStale):
        return Outcome(STALE)
    if isinstance(exc, UpstreamClosed):
        return Outcome(RESET)
    if isinstance(exc, UpstreamProtocolError):
        return Outcome(MALFORMED)
    return Outcome(TIMEOUT)


def _abort_client(request: web.BaseRequest) -> None:
    tr = request.transport
    if tr is not None:
        tr.abort()


def _content_length(raw: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in raw:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

