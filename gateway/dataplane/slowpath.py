"""A flight's attempts that must wait, as a coroutine: connect or queue for a connection,
stream a body not in memory yet, judge a small error answer whole ("not ready"); after a
failure the attempts plan says what is next, and an attempt that can go out at once goes
back to the fast path. Part of `flight.Flight`, which hands itself in (a `ports.Forwarding`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.dataplane.answerparsing import HIGH_WATER
from gateway.dataplane.attempts import (
    CUT,
    HOLD,
    KILLED,
    MALFORMED,
    OVERFLOW,
    PASS,
    RESET,
    STALE,
    TIMEOUT,
    UNDELIVERED,
    Outcome,
    answered,
    on_head,
)
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.formscan import scanner
from gateway.dataplane.inflight import Aborted
from gateway.dataplane.jsonpeek import Unreadable
from gateway.dataplane.notready import MAX_BODY as NOT_READY_MAX
from gateway.dataplane.ports import Forwarding
from gateway.dataplane.request import BadBody, BodyTimeout, BodyTooLarge, ClientGone, RefusedBody
from gateway.dataplane.streaming import stream
from gateway.dataplane.wire import SMALL_BODY
from gateway.errors import (
    ClientTimeout,
    DrillFault,
    UpstreamClosed,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamStale,
    UpstreamTimeout,
)

__all__ = ["outcome_of", "run"]


def outcome_of(exc: UpstreamError) -> Outcome:
    """An attempt's error as the attempts plan sees it."""
    if isinstance(exc, Aborted):
        return Outcome(KILLED)
    if isinstance(exc, UpstreamOverflow):
        return Outcome(OVERFLOW)
    if not exc.delivered:
        return Outcome(UNDELIVERED)
    if isinstance(exc, UpstreamStale):
        return Outcome(STALE)
    if isinstance(exc, UpstreamClosed):
        return Outcome(CUT if exc.mid_answer else RESET)
    if isinstance(exc, UpstreamProtocolError):
        return Outcome(MALFORMED)
    return Outcome(TIMEOUT)


async def run(flight: Forwarding) -> None:
    """Attempts that need waiting: a connection to open or free, a body to stream."""
    proxy = flight.proxy
    req = flight.req
    protocol = flight.plan.config.protocol
    try:
        if flight.prefix is None:  # the body is not in memory yet
            cl = req.content_length
            if cl is not None and cl > SMALL_BODY:
                flight.prefix, flight.complete = b"", False  # it streams from its start
            else:  # small (it may move versions) or chunked: its start first
                try:  # (the route's total deadline holds while the client sends it, as it
                    # does while the rest streams: a byte now and then held the request, and
                    # its max_inflight slot, for as long as 64 KiB took; one timer)
                    async with asyncio.timeout_at(flight.deadline):
                        prefix = await req.read_prefix(SMALL_BODY, proxy.max_body)
                except TimeoutError:
                    proxy.clock.now = proxy.loop.time()  # (a timer, not bytes: see upstream)
                    raise BodyTimeout("the request body did not arrive within the route's "
                                      "total timeout") from None
                if prefix is None:
                    flight._finished()
                    proxy.too_large(req, flight.plan)
                    return
                flight.prefix = prefix
                flight.complete = req.body_done and len(prefix) == req.body_size
                if proxy.loop.time() >= flight.deadline:  # (the client's delay: 408)
                    raise BodyTimeout("the request body did not arrive within the route's "
                                      "total timeout")
        while True:
            ex = await _attempt(flight)
            if ex is None:
                return  # answered (a failure, a fallback) or moved to the fast path
            status = ex.status
            how = PASS if status < 400 else on_head(protocol, status, flight.routing_path,
                                                    flight.complete, proxy.policy(flight.plan),
                                                    flight.req.method)
            if how != PASS:
                body = None
                if how == HOLD:
                    try:
                        await ex.settle(NOT_READY_MAX)  # the error body decides; it is small
                    except UpstreamError as exc:
                        flight.exchange = None
                        ex.release()
                        if not isinstance(exc, Aborted):
                            proxy.count_error(flight.plan, flight.target, exc, flight.started)
                        if not flight._next(outcome_of(exc), exc, None):
                            return
                        continue
                    if ex.complete:
                        body = ex.peek_body()
                outcome = answered(protocol, status, flight.routing_path, body, ex.headers,
                                   flight.req.method, flight.asked_name())
                if not flight._next(outcome, None, ex):
                    return  # answered: forwarded (or the route's fallback)
                if flight.complete and flight._fast():
                    return
                continue
            length = ex.length
            if not ex.complete and length is not None and length <= HIGH_WATER:
                # A small answer is held until it is whole, as on the fast path (`Flight.whole`):
                # a backend that cuts or hangs after the head is a clean 502/504 (a retry where
                # the plan allows), never a 200 with a truncated body.
                try:
                    await ex.settle(HIGH_WATER)
                except UpstreamError as exc:
                    flight.exchange = None
                    ex.release()
                    if flight.aborted is not None:  # cut by a kill: not the backend's fault
                        flight._answer_killed(flight.aborted)
                        return
                    proxy.count_error(flight.plan, flight.target, exc, flight.started)
                    flight._trace_failed(exc)
                    if not flight._next(outcome_of(exc), exc, None):
                        return
                    if not flight.new_connection and flight.complete and flight._fast():
                        return
                    continue
            flight.exchange = None
            if flight.aborted is not None:  # a kill landed as the answer came in
                ex.release()
                flight._answer_killed(flight.aborted)
                return
            if ex.complete:
                proxy.write_complete(flight, ex)
                flight._finished()
                return
            await stream(flight, ex)
            return
    except (BodyTooLarge, BodyTimeout, BadBody) as exc:
        flight._close_ex()
        flight._finished()
        proxy.body_failed(req, flight.plan, flight.target, flight.decision, exc)
    except (ClientGone, asyncio.CancelledError):
        flight._close_ex()
        flight._finished()


async def _attempt(flight: Forwarding) -> Exchange | None:
    """One attempt at the current target, waiting as needed. An exchange with its answer
    head in; or None when the request was answered or taken over by the fast path."""
    proxy = flight.proxy
    while True:
        req = flight.req
        target = flight.target
        body: bytes | AsyncIterator[bytes]
        if flight.complete:
            body = flight._body()
            length: int | None = len(body)
        else:
            first = flight._body()
            cl = req.content_length
            length = None if cl is None else cl + len(first) - len(flight.prefix or b"")
            body = _chain(flight, first)
        pool = proxy.upstreams.pools.get(target.origin) or proxy.upstreams.pool(target.origin)
        # (read afresh, and for the pool's idle check too: a timer may have ended the wait
        # before this attempt, and the shared clock moves with socket events only)
        flight.started = proxy.clock.now = proxy.loop.time()
        flight.version = target.name
        traceparent = None
        if req.span is not None:  # the attempt's span covers the wait for a connection
            flight.att = req.span.attempt(flight.plan.name, target.name, target.url,
                                        req.method.decode("latin-1"))
            traceparent = flight.att.traceparent
        try:
            if target.name == flight.faulted:
                raise DrillFault()
            why = proxy.killed_since(flight.plan, target.name)  # (a body read, a failover)
            if why is None:
                # (the wait for a connection ends by the route's total deadline too: past
                # it, the plan answers 504 rather than trying another version)
                left = flight.deadline - proxy.loop.time()
                try:
                    ex, reused = await pool.acquire(
                        min(flight.plan.config.timeouts.connect, max(left, 0.001)),
                        flight.new_connection)
                except UpstreamTimeout as exc:
                    if left < flight.plan.config.timeouts.connect:
                        exc.backend_fault = False  # cut by the deadline: not its failure
                    raise
                flight.new_connection = False
                if req.flight is not flight:  # the client left as the connection came (a
                    pool.release(ex)  # wait_for that returns its result keeps the cancel)
                    return None
                # a kill while it waited (one that cut it, with abort_inflight, or not):
                # nothing went out yet, so what the table holds now decides
                flight.aborted = None
                why = proxy.killed_since(flight.plan, target.name)
                if why is not None:
                    pool.release(ex)
            if why is not None:
                if not flight._passed_kill(why):
                    return None
                if not flight.new_connection and flight.complete and flight._fast():
                    return None
                continue
            ex.begin(flight.deadline, flight.plan.config.timeouts.idle, req.method == b"HEAD",
                     target.path_bytes)
            flight.exchange = ex
            head = proxy.request_head(req, target, pool.host_line, length,
                                      flight.raw_target, traceparent)
            try:
                await ex.send(head, body, length is None, req.wake)
                await ex.read_head()
                if flight.att is not None:
                    flight.att.answered(ex.status)
                    flight.att = None
            except UpstreamClosed as exc:
                if reused and not ex.got_bytes:
                    raise UpstreamStale(str(exc)) from None  # closed while idle
                raise
            except ClientTimeout as exc:  # the client's delay: 408, not the backend's fault
                raise BodyTimeout(str(exc)) from None
            return ex
        except Aborted as exc:
            flight._close_ex()
            flight._answer_killed(exc)
            return None
        except UpstreamError as exc:
            cur = flight.exchange
            if cur is not None:
                flight.exchange = None
                cur.release()
            why = None
            if cur is None:  # nothing went out (a wait, a connect): the table decides
                flight.aborted = None
                why = proxy.killed_since(flight.plan, target.name)
            if why is None:
                proxy.count_error(flight.plan, target, exc, flight.started)
            flight._trace_failed(exc)
            if flight.aborted is not None:  # cut while its request went out
                flight._answer_killed(flight.aborted)
                return None
            if not (flight._passed_kill(why) if why is not None
                    else flight._next(outcome_of(exc), exc, None)):
                return None
            if not flight.new_connection and flight.complete and flight._fast():
                return None  # the next attempt runs without this coroutine


async def _chain(flight: Forwarding, first: bytes) -> AsyncIterator[bytes]:
    """The body as the backend gets it: what is in memory, then the rest as it comes. A
    multipart body routed by its `model` is watched on its way (`formscan.py`): a second
    `model` part raises `RefusedBody` before the bytes that end its head go out, and a form
    that never closes (no close delimiter, or a part head cut off) before its last bytes
    do (Starlette refuses it, Werkzeug reads an empty form)."""
    field = flight.field
    scan = None if field is None or not field.form else scanner(flight.req.headers)
    if scan is None:
        if first:
            yield first
        async for chunk in flight.req.rest(len(flight.prefix or b""), flight.proxy.max_body):
            yield chunk
        return
    try:  # (the last bytes wait for the body's end: `PartScanner.send`)
        if out := scan.send(first):
            yield out
        async for chunk in flight.req.rest(len(flight.prefix or b""), flight.proxy.max_body):
            if out := scan.send(chunk):
                yield out
        if out := scan.end():
            yield out
    except Unreadable as exc:
        raise RefusedBody(str(exc)) from None
