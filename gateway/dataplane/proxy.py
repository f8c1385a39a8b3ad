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

from gateway.dataplane.bodies import BodyReader, BodyTimeout, BodyTooLarge
from gateway.dataplane.drillfault import FaultGate
from gateway.dataplane.headers import (
    declared_charset,
    request_head,
    response_head,
    response_multidict,
    undecodable,
)
from gateway.dataplane.inflight import Aborted, Handle, Inflight
from gateway.dataplane.jsonpeek import ModelField, Unreadable, find_model, rewrite_model
from gateway.dataplane.paths import BadTarget, route_host, split_target
from gateway.dataplane.retry import RetryBudget, retryable
from gateway.dataplane.shadow import Mirror, Tap
from gateway.dataplane.spans import AttemptSpan, RequestSpan, RequestTracer
from gateway.dataplane.sse import EventCutter
from gateway.dataplane.upstream import Exchange, Upstreams
from gateway.domain.routing import (
    FAILOVER,
    FALLBACK,
    KILLED,
    STATE_UNKNOWN,
    Choice,
    RoutePlan,
    RouteTable,
    Target,
)
from gateway.errors import (
    DrillFault,
    UpstreamClosed,
    UpstreamError,
    UpstreamOverflow,
    UpstreamTimeout,
)
from gateway.log import event
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import NULL, Recorder, RequestRecord

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
                 body_timeout: float = 30.0, max_inflight: int = 10_000,
                 recorder: Recorder = NULL,
                 tracer: RequestTracer | None = None,
                 faults: FaultGate | None = None, shadow: Mirror | None = None) -> None:
        self.max_inflight = max_inflight
        self.shadow = shadow  # shadow copies (dataplane/shadow.py), for routes with a shadow
        self.tracer = tracer  # None: tracing off, and the request path never looks further
        self.faults = faults or FaultGate(None)
        self.bodies = BodyReader(max_body, peek_bytes, body_timeout)
        self.holder = holder
        self.upstreams = upstreams
        self.inflight = inflight
        self.metrics = metrics
        self.observer = observer
        self.recorder = recorder  # told how each request went (telemetry/record.py)
        self.scheme_b = scheme.encode()
        self.rand = random.random
        self.loop = asyncio.get_running_loop()
        self._labels: dict[tuple[str, str, str, int], bytes] = {}  # x-killgate-* lines
        self._budgets: dict[str, RetryBudget] = {}

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        inflight = self.inflight
        rec = RequestRecord(self.loop.time())
        resp: web.StreamResponse
        if inflight.count >= self.max_inflight:
            # Shed at once (RELIABILITY row 40): admitted requests keep their latency.
            self.metrics.inc("killgate_requests_shed_total")
            resp = self._error(503, "overloaded", "this gateway is at its limit of requests "
                               "in flight; retry shortly", extra_headers={"retry-after": "1"})
            self._finished(request, rec, resp)
            return resp
        inflight.count += 1
        span = None if self.tracer is None else self.tracer.begin(request)
        try:
            resp = await self._handle(request, self.holder.table, rec, span)
        except BodyTimeout:
            resp = self._error(408, "request_timeout",
                               f"the request body stalled for {self.bodies.timeout:g}s",
                               extra_headers={"connection": "close"})
        except BaseException:
            if span is not None:
                span.finish(None)
            raise
        finally:
            inflight._done()
        if span is not None:
            rec.trace_id = span.trace_id  # (the access log's)
            span.finish(resp)
        self._finished(request, rec, resp)
        return resp

    def _finished(self, request: web.BaseRequest, rec: RequestRecord,
                  resp: web.StreamResponse) -> None:
        """The one place a finished request is reported to telemetry."""
        if not rec.status:  # an answer of the gateway's own (`_reply`): read what it says
            rec.status = resp.status
            h = resp.headers
            rec.route = h.get("x-killgate-route", "")
            rec.version = h.get("x-killgate-version", "")
            rec.decision = h.get("x-killgate-decision", "")
            rec.bytes_out = resp.content_length or 0
        rec.end = self.loop.time()
        recorder = self.recorder
        if recorder.detailed:
            rec.peer = request.remote or ""
            rec.request_id = request.headers.get("x-request-id", "")
            rec.method = request.method
            rec.path = request.path
            rec.bytes_in = request.content_length or 0
        recorder.done(rec)

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
        return web.Response(status=status, body=body, headers=h)

    def _error(self, status: int, type_: str, message: str, route: str | None = None,
               version: str | None = None, decision: str | None = None,
               extra_headers: dict[str, str] | None = None, **extra: object) -> web.Response:
        return self._reply(status, _error_body(type_, message, **extra), route, version, decision,
                           extra_headers)

    def _unavailable(self, plan: RoutePlan, decision: str, scope: str | None = None) -> web.Response:
        """Killed or nothing can serve: the route's fallback, else a 503."""
        fb = plan.fallback
        if plan.killed == STATE_UNKNOWN:  # not a kill: nothing can serve until we know
            self.metrics.inc("killgate_state_unknown_answers_total")
            decision = FALLBACK
            if fb is None:
                return self._error(503, "state_unknown", "this gateway has not loaded the kill "
                                   "state yet; retry shortly", plan.name, None, FALLBACK,
                                   extra_headers={"retry-after": "1"})
        if fb is not None:
            return self._reply(fb.status, plan.fallback_body, plan.name, None, decision,
                               dict(fb.headers))
        if decision == KILLED:
            return self._error(503, "killed", "this model route is disabled", plan.name, None,
                               KILLED, scope=scope or plan.killed or "route")
        return self._error(503, "unavailable", "no version of this route can serve right now",
                           plan.name, None, decision)

    # ------------------------------------------------------------------ request path

    async def _handle(self, request: web.BaseRequest, table: RouteTable,
                      rec: RequestRecord, span: RequestSpan | None) -> web.StreamResponse:
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
        rec.stable = plan.stable
        pin = headers.get("x-killgate-pin") if plan.allow_pin else None
        if pin is not None and pin not in plan.targets:
            return self._error(400, "unknown_version",
                               f"x-killgate-pin names no version of route {plan.name!r}",
                               plan.name)
        sticky = headers.get(plan.sticky_header) if plan.sticky_header else None
        choice = plan.choose(sticky, pin, self.rand)
        if span is not None:
            _trace_choice(span, plan, choice, model, path)
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
        # a failover drill's request (signed drill token) may be made to miss one version
        faulted = self.faults.version(headers, table.doc, plan.name) if table.doc.drills else None
        return await self._forward(request, plan, choice, prefix, field, cl, target, rec,
                                   span, faulted)

    def _bad(self, reason: str, message: str) -> web.Response:
        """A request refused for its shape: 400, counted, logged at debug (a client can send
        these at will: never a warning or a traceback per request)."""
        self.metrics.inc("killgate_bad_requests_total", (reason,), label_names=("reason",))
        event(log, "bad_request", logging.DEBUG, reason=reason, message=message)
        return self._error(400, "bad_request", message)

    def _head(self, request: web.BaseRequest, target: Target, host_header: bytes,
              length: int | None, raw_target: str, traceparent: bytes | None = None) -> bytes:
        first = b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (
            request.method.encode(), target.path_bytes, raw_target.encode("latin-1"),
            host_header)
        host = request.headers.get("host")
        fwd = b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n" % (
            (request.remote or "unknown").encode(), self.scheme_b)
        if host:
            fwd += b"x-forwarded-host: %s\r\n" % host.encode("latin-1")
        if traceparent is not None:  # ours replaces the client's: the backend joins our span
            fwd += b"traceparent: %s\r\n" % traceparent
            return request_head(first, request.raw_headers, fwd, length, traced=True)
        return request_head(first, request.raw_headers, fwd, length)

    async def _forward(self, request: web.BaseRequest, plan: RoutePlan, choice: Choice,
                       prefix: bytes | None, field: ModelField | None,
                       cl: int | None, raw_target: str,
                       rec: RequestRecord, span: RequestSpan | None,
                       faulted: str | None = None) -> web.StreamResponse:
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
        decision = choice.decision
        targets: tuple[Target, ...] | None = None
        attempt = 0
        retries = 0
        retry = rc.retry
        budget = None
        if retry is not None:
            budget = self._budgets.get(plan.name)
            if budget is None:
                budget = self._budgets[plan.name] = RetryBudget()
            budget.request(loop.time())
        last: UpstreamError | None = None
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
                att = None if span is None else span.attempt(plan.name, target.name,
                                                             target.url, request.method)
                try:
                    if target.name == faulted:
                        raise DrillFault()
                    ex = await self._exchange(request, target, handle, send_body, length,
                                              deadline, timeouts.connect, timeouts.idle,
                                              complete, raw_target, att)
                    rec.upstream = loop.time() - started
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
                    if span is not None:
                        _trace_abort(span, att, target, exc)
                    return self._unavailable_killed(plan, target, exc)
                except UpstreamError as exc:
                    self._count_error(plan, target, exc, started)
                    last = exc
                    if att is not None:
                        att.failed(exc.kind())
                    if span is not None:
                        self._trace_ejection(span, plan, target)
                    if handle.aborted is not None:
                        if span is not None:
                            _trace_abort(span, None, target, handle.aborted)
                        return self._unavailable_killed(plan, target, handle.aborted)
                    if targets is None:
                        targets = plan.failover_for(target.name)
                    if exc.delivered:
                        # The backend had the request: move on only if the route opted in.
                        if not (isinstance(exc, UpstreamClosed) and retry is not None
                                and "reset" in retry.retry_on and complete
                                and retries + 1 < retry.attempts and attempt < len(targets)
                                and budget is not None and budget.allow(loop.time(),
                                                                        retry.budget)):
                            return self._upstream_failed(plan, target, decision, exc)
                        retries += 1
                    # Nothing reached that backend: try the next version.
                    if attempt >= len(targets):
                        break
                    if span is not None:
                        span.event("killgate.failover", {
                            "killgate.failover.from": target.name,
                            "killgate.failover.to": targets[attempt].name,
                            "killgate.failover.cause": exc.kind()})
                    target = targets[attempt]
                    attempt += 1
                    decision = FAILOVER
                    self.metrics.inc("killgate_failovers_total", (plan.name,),
                                     label_names=("route",))
                    continue
                if retry is not None and ex.status >= 500 and complete \
                        and retryable(ex.status, retry.retry_on) \
                        and retries + 1 < retry.attempts and budget is not None:
                    if targets is None:
                        targets = plan.failover_for(target.name)
                    if attempt < len(targets) and budget.allow(loop.time(), retry.budget):
                        # Nothing reached the client yet: drop this answer, ask another version.
                        ex.close()
                        ex.release()
                        if self.observer is not None:
                            self.observer.outcome(plan.name, target.name, "5xx",
                                                  loop.time() - started)
                        if span is not None:
                            self._trace_ejection(span, plan, target)
                            span.event("killgate.failover", {
                                "killgate.failover.from": target.name,
                                "killgate.failover.to": targets[attempt].name,
                                "killgate.failover.cause": str(ex.status)})
                        self.metrics.inc("killgate_retries_total", (plan.name, str(ex.status)),
                                         label_names=("route", "cause"))
                        retries += 1
                        target = targets[attempt]
                        attempt += 1
                        decision = FAILOVER
                        continue
                tap = None if rc.shadow is None or self.shadow is None else self.shadow.tap(
                    plan, target, request.method.encode(), raw_target.encode("latin-1"),
                    list(request.raw_headers), prefix, complete, field,
                    (request.remote or "").encode(), started)
                if ex.complete and request.method != "HEAD":
                    return self._complete(request, plan, target, decision, ex, started, rec,
                                          span, tap)
                return await self._respond(request, plan, target, decision, ex, handle, started,
                                           rec, span, tap)
            if plan.fallback is not None:
                return self._unavailable(plan, FALLBACK)
            assert last is not None
            return self._upstream_failed(plan, target, decision, last)
        finally:
            handles.discard(handle)

    def _complete(self, request: web.BaseRequest, plan: RoutePlan, target: Target,
                  decision: str, ex: Exchange, started: float,
                  rec: RequestRecord,
                  span: RequestSpan | None = None, tap: Tap | None = None) -> web.StreamResponse:
        """The fast path: the whole answer has arrived; hand it back in one write."""
        status = ex.status
        body = ex.take_body()
        if tap is not None:
            tap.answer(status, ex.headers, body)  # a copy goes once this answer is written
        if span is not None:
            span.answered(status, plan.name, target.name, decision)
            span.body(body)
        raw = ex.headers
        ex.release()
        key = (plan.name, target.name, decision, status)
        _served(rec, plan.name, target.name, decision, status)
        rec.bytes_out = len(body)
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
                        replayable: bool, raw_target: str,
                        att: AttemptSpan | None = None) -> Exchange:
        pool = self.upstreams.pools.get(target.origin) or self.upstreams.pool(target.origin)
        head = self._head(request, target, pool.host_header, length, raw_target,
                          None if att is None else att.traceparent)
        for _ in range(2):
            ex, reused = await pool.acquire(connect)
            if handle.aborted is not None:
                pool.release(ex)
                raise handle.aborted
            ex.begin(deadline, idle, request.method == "HEAD")
            handle.exchange = ex
            try:
                await ex.send(head, body, chunked=length is None)
                await ex.read_head()
                if att is not None:
                    att.answered(ex.status)
                return ex
            except UpstreamClosed:
                ex.release()
                if reused and replayable and not ex.got_bytes:
                    continue  # a keep-alive connection the backend had closed: retry fresh
                raise
            except BaseException:
                ex.release()
                raise
        raise UpstreamClosed("backend closed the connection twice before answering")

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

    def _trace_ejection(self, span: RequestSpan, plan: RoutePlan, target: Target) -> None:
        """This attempt's outcome got its version ejected (outlier detection acts at once)."""
        key = (plan.name, target.name)
        if key in self.holder.table.unhealthy and target.name not in plan.excluded:
            span.event("killgate.ejection", {"killgate.version": target.name,
                                             "killgate.ejection.cause": "outlier"})

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
                       started: float, rec: RequestRecord,
                       span: RequestSpan | None = None,
                       tap: Tap | None = None) -> web.StreamResponse:
        raw = ex.headers
        out = response_multidict(raw)
        out["x-killgate-route"] = plan.name
        out["x-killgate-version"] = target.name
        out["x-killgate-decision"] = decision
        status = ex.status
        _served(rec, plan.name, target.name, decision, status)
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
        first = span is not None
        try:
            while True:
                data = await ex.read()
                if not data:
                    break
                if first and span is not None:
                    first = False
                    span.first_chunk(data)
                if tap is not None:
                    tap.feed(data)
                if cutter is not None:
                    data = cutter.feed(data)
                    if not data:
                        continue
                if not rec.first_byte:
                    rec.first_byte = self.loop.time()
                rec.bytes_out += len(data)
                await resp.write(data)
        except UpstreamError as exc:
            ex.release()
            why = handle.aborted
            kind = "killed" if why is not None else "upstream_failed"
            if span is not None:
                if why is not None:
                    _trace_abort(span, None, target, why)
                span.stream_failed(kind)
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
            rec.bytes_out += len(tail)
            await resp.write(tail)
        ex.release()
        if self.observer is not None:
            self.observer.outcome(plan.name, target.name, "5xx" if status >= 500 else "ok",
                                  self.loop.time() - started)
        await resp.write_eof()
        if tap is not None:
            tap.end(status, raw)
        return resp


def _served(rec: RequestRecord, route: str, version: str, decision: str, status: int) -> None:
    """A version's answer is on its way: what telemetry records about it."""
    rec.route = route
    rec.version = version
    rec.decision = decision
    rec.status = status


def _trace_choice(span: RequestSpan, plan: RoutePlan, choice: Choice, model: str | None,
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


def _trace_abort(span: RequestSpan, att: AttemptSpan | None, target: Target,
                 why: Aborted) -> None:
    if att is not None:
        att.failed("killed")
    span.event("killgate.kill", {"killgate.kill.scope": why.scope,
                                 "killgate.version": target.name, "killgate.inflight": 1})


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

