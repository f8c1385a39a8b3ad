"""The data plane: match a route, choose a version, forward, stream the answer back.

Owns the request path of CONTRACT §3. Reads the routing snapshot once per request from
the `TableHolder` (no I/O for any decision), talks to backends only through
`gateway.upstream`, and is the one place that maps data-plane errors to HTTP. Streams
never end in a way that looks like success when they did not succeed: SSE gets a final
`killgate.error` event, any other body an aborted connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

from gateway.errors import UpstreamClosed, UpstreamError, UpstreamTimeout
from gateway.headers import request_headers, response_headers
from gateway.jsonpeek import Ambiguous, ModelField, find_model, rewrite_model
from gateway.metrics import Metrics
from gateway.routing import FAILOVER, FALLBACK, KILLED, RoutePlan, RouteTable, Target
from gateway.snapshot import TableHolder
from gateway.upstream import Exchange, Upstreams

__all__ = ["Aborted", "Inflight", "Observer", "Proxy"]

log = logging.getLogger("killgate.proxy")

SMALL_BODY = 64 * 1024  # bodies up to this size are read first, so they can move versions
_JSON = "application/json"


class Aborted(UpstreamError):
    """An in-flight exchange was cut on purpose (a kill with abort_inflight)."""

    def __init__(self, reason: str, scope: str) -> None:
        self.reason = reason
        self.scope = scope
        super().__init__(reason)


class BodyTooLarge(Exception):
    pass


class Observer(Protocol):
    """Hook for passive health (outlier detection): told how each exchange went."""

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None: ...


class _NoObserver:
    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        return None


class Handle:
    __slots__ = ("aborted", "exchange", "route", "version")

    def __init__(self, route: str) -> None:
        self.route = route
        self.version: str | None = None
        self.exchange: Exchange | None = None
        self.aborted: Aborted | None = None

    def abort(self, why: Aborted) -> None:
        if self.aborted is None:
            self.aborted = why
            if self.exchange is not None:
                self.exchange.fail(why)


class Inflight:
    """Requests in flight in this process: counted for draining, findable for kills."""

    def __init__(self) -> None:
        self.handles: set[Handle] = set()
        self.count = 0
        self._idle: asyncio.Event | None = None

    def abort(self, match: Callable[[Handle], str | None], reason: str = "killed") -> int:
        n = 0
        for h in list(self.handles):
            scope = match(h)
            if scope is not None:
                h.abort(Aborted(reason, scope))
                n += 1
        return n

    async def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), left)
            except TimeoutError:
                return False
        return True

    def _done(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()


def _error_body(type_: str, message: str, **extra: object) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message, **extra}}).encode()


def _sse_error(type_: str, route: str, version: str | None) -> bytes:
    data = json.dumps({"type": type_, "route": route, "version": version})
    return f"event: killgate.error\ndata: {data}\n\n".encode()


class Proxy:
    """The data-plane request handler (an aiohttp low-level `web.Server` handler)."""

    def __init__(self, holder: TableHolder, upstreams: Upstreams, inflight: Inflight,
                 metrics: Metrics, max_body: int, peek_bytes: int,
                 observer: Observer | None = None, scheme: str = "http") -> None:
        self.holder = holder
        self.upstreams = upstreams
        self.inflight = inflight
        self.metrics = metrics
        self.max_body = max_body
        self.peek_bytes = peek_bytes
        self.observer: Observer = observer or _NoObserver()
        self.scheme = scheme
        self.rand = random.random

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        inflight = self.inflight
        inflight.count += 1
        try:
            return await self._handle(request, self.holder.table)
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
        self.metrics.inc("killgate_requests_total",
                         (route or "", version or "", decision or "", str(status)),
                         label_names=("route", "version", "decision", "code"))
        return web.Response(status=status, body=body, headers=h)

    def _error(self, status: int, type_: str, message: str, route: str | None = None,
               version: str | None = None, decision: str | None = None,
               **extra: object) -> web.Response:
        return self._reply(status, _error_body(type_, message, **extra), route, version, decision)

    def _unavailable(self, plan: RoutePlan, decision: str, scope: str | None = None) -> web.Response:
        """Killed or nothing can serve: the route's fallback, else a 503."""
        fb = plan.fallback
        if fb is not None:
            body = json.dumps(fb.json_).encode() if fb.json_ is not None else b""
            return self._reply(fb.status, body, plan.name, None, decision, dict(fb.headers))
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
        if cl is not None and cl > self.max_body:
            return self._error(413, "body_too_large",
                               f"the request body exceeds {self.max_body} bytes")
        path = request.path
        host = request.host.rsplit(":", 1)[0].lower() if request.host else ""
        if host.startswith("["):
            host = request.host.lower().partition("]")[0] + "]"
        prefix: bytes | None = None
        field: ModelField | None = None
        model: str | None = None
        if table.needs_model(path, host, headers):
            prefix = await self._read_prefix(request, cl)
            if prefix is None:
                return self._error(413, "body_too_large",
                                   f"the request body exceeds {self.max_body} bytes")
            try:
                field = find_model(prefix)
            except Ambiguous as exc:
                return self._error(400, "bad_request", str(exc))
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
        if choice.target is None:
            return self._unavailable(plan, choice.decision)
        # Small bodies are read up front: a request not yet delivered can move versions.
        if prefix is None and request.body_exists and (cl is None or cl <= SMALL_BODY):
            prefix = await self._read_prefix(request, cl, SMALL_BODY)
            if prefix is None:
                return self._error(413, "body_too_large",
                                   f"the request body exceeds {self.max_body} bytes", plan.name)
        elif prefix is None and not request.body_exists:
            prefix = b""
        return await self._forward(request, plan, (choice.target, *choice.failover),
                                   choice.decision, prefix, field)

    async def _read_prefix(self, request: web.BaseRequest, cl: int | None,
                           limit: int | None = None) -> bytes | None:
        """Read up to `limit` (default: the model peek size) bytes of the body.

        Returns None when the body is larger than max_body. What is read is replayed to
        the backend; the rest, if any, streams after it.
        """
        limit = limit or self.peek_bytes
        content = request.content
        if cl is not None and cl <= limit:
            return await content.readexactly(cl) if cl else b""
        parts: list[bytes] = []
        n = 0
        while n < limit:
            chunk = await content.readany()
            if not chunk:
                break
            parts.append(chunk)
            n += len(chunk)
            if n > self.max_body:
                return None
        return b"".join(parts)

    async def _rest(self, request: web.BaseRequest, already: int) -> AsyncIterator[bytes]:
        content = request.content
        n = already
        while True:
            chunk = await content.readany()
            if not chunk:
                return
            n += len(chunk)
            if n > self.max_body:
                raise BodyTooLarge
            yield chunk

    def _head(self, request: web.BaseRequest, target: Target, host_header: bytes,
              length: int | None) -> bytes:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        fwd = request_headers(request.raw_headers, peer[0] if peer else "unknown", self.scheme,
                              request.headers.get("host", "").encode("latin-1") or None)
        parts = [b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (
            request.method.encode(), target.base_path.encode(),
            request.raw_path.encode("latin-1"), host_header)]
        for name, value in fwd:
            parts.append(b"%s: %s\r\n" % (name, value))
        if length is not None:
            parts.append(b"content-length: %d\r\n\r\n" % length)
        else:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
        return b"".join(parts)

    async def _forward(self, request: web.BaseRequest, plan: RoutePlan,
                       targets: tuple[Target, ...], decision: str, prefix: bytes | None,
                       field: ModelField | None) -> web.StreamResponse:
        rc = plan.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + rc.timeouts.total
        cl = request.content_length
        # Is the whole body in memory (replayable), or does a tail stream after `prefix`?
        complete = prefix is not None and (
            (cl is not None and len(prefix) == cl) or (cl is None and request.content.at_eof()))
        handle = Handle(plan.name)
        self.inflight.handles.add(handle)
        last: UpstreamError | None = None
        try:
            for attempt, target in enumerate(targets):
                if attempt:
                    decision = FAILOVER
                    self.metrics.inc("killgate_failovers_total", (plan.name,),
                                     label_names=("route",))
                body = prefix
                if field is not None and target.model and body is not None:
                    body = rewrite_model(body, field, target.model)
                if complete:
                    length: int | None = len(body or b"")
                    send_body: bytes | AsyncIterator[bytes] | None = body
                else:
                    length = None if cl is None else cl + (len(body or b"") - len(prefix or b""))
                    send_body = self._chain(body or b"", request, len(prefix or b""))
                handle.version = target.name
                started = loop.time()
                try:
                    ex = await self._exchange(request, target, handle, send_body, length,
                                              deadline, rc.timeouts.connect, rc.timeouts.idle,
                                              replayable=complete)
                except BodyTooLarge:
                    return self._error(413, "body_too_large",
                                       f"the request body exceeds {self.max_body} bytes",
                                       plan.name, target.name, decision)
                except Aborted as exc:
                    return self._unavailable_killed(plan, target, exc)
                except UpstreamError as exc:
                    self._count_error(plan, target, exc, started)
                    last = exc
                    if handle.aborted is not None:
                        return self._unavailable_killed(plan, target, handle.aborted)
                    if not exc.delivered:
                        continue  # nothing reached that backend: try the next version
                    return self._upstream_failed(plan, target, decision, exc)
                return await self._respond(request, plan, target, decision, ex, handle, started)
            if plan.fallback is not None:
                return self._unavailable(plan, FALLBACK)
            assert last is not None
            return self._upstream_failed(plan, targets[-1], decision, last)
        finally:
            self.inflight.handles.discard(handle)

    async def _chain(self, first: bytes, request: web.BaseRequest,
                     already: int) -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in self._rest(request, already):
            yield chunk

    async def _exchange(self, request: web.BaseRequest, target: Target, handle: Handle,
                        body: bytes | AsyncIterator[bytes] | None, length: int | None,
                        deadline: float, connect: float, idle: float,
                        replayable: bool) -> Exchange:
        pool = self.upstreams.pool(target.origin)
        head = self._head(request, target, pool.host_header, length)
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
        kind = "timeout" if isinstance(exc, UpstreamTimeout) else (
            "connect" if not exc.delivered else type(exc).__name__)
        self.metrics.inc("killgate_upstream_errors_total", (plan.name, target.name, kind),
                         label_names=("route", "version", "kind"))
        self.observer.outcome(plan.name, target.name, "connect" if not exc.delivered else "error",
                              asyncio.get_running_loop().time() - started)

    def _unavailable_killed(self, plan: RoutePlan, target: Target, why: Aborted) -> web.Response:
        self.metrics.inc("killgate_inflight_aborted_total", (plan.name,), label_names=("route",))
        if why.scope == "version":
            return self._error(503, "killed", "this model version is disabled", plan.name,
                               target.name, KILLED, scope="version")
        return self._unavailable(plan, KILLED, why.scope)

    def _upstream_failed(self, plan: RoutePlan, target: Target, decision: str,
                         exc: UpstreamError) -> web.Response:
        if isinstance(exc, UpstreamTimeout):
            return self._error(504, "upstream_timeout",
                               f"the backend did not answer in time ({exc.phase} timeout)",
                               plan.name, target.name, decision)
        return self._error(502, "upstream_failed", f"the backend failed: {exc}",
                           plan.name, target.name, decision)

    async def _respond(self, request: web.BaseRequest, plan: RoutePlan, target: Target,
                       decision: str, ex: Exchange, handle: Handle,
                       started: float) -> web.StreamResponse:
        out = CIMultiDict(response_headers(ex.headers))
        out["x-killgate-route"] = plan.name
        out["x-killgate-version"] = target.name
        out["x-killgate-decision"] = decision
        status = ex.status
        self.metrics.inc("killgate_requests_total",
                         (plan.name, target.name, decision, str(status)),
                         label_names=("route", "version", "decision", "code"))
        if ex.complete and request.method != "HEAD":
            body = ex.take_body()
            ex.release()
            self.observer.outcome(plan.name, target.name, "5xx" if status >= 500 else "ok",
                                  asyncio.get_running_loop().time() - started)
            return web.Response(status=status, body=body, headers=out)
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
        tail = b""  # SSE: bytes of an event not yet complete, held back
        try:
            while True:
                data = await ex.read()
                if not data:
                    break
                if sse:
                    data = tail + data
                    cut = max(data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n"))
                    if cut < 0:
                        tail = data
                        continue
                    end = cut + (4 if data.startswith(b"\r\n\r\n", cut) else 2)
                    data, tail = data[:end], data[end:]
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
            if sse:
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
        if tail:
            await resp.write(tail)
        ex.release()
        self.observer.outcome(plan.name, target.name, "5xx" if status >= 500 else "ok",
                              asyncio.get_running_loop().time() - started)
        await resp.write_eof()
        return resp


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

