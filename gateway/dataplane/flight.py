"""One request on its way to a backend and its answer on the way back: the forwarding path.

Owns the attempts of one routed request (the plan is `dataplane/attempts.py`'s) and the three
ways its answer travels:

* the fast path, with no Task: a request whose body is in memory and whose backend has an
  idle pooled connection is written from the parser callback; the exchange tells this
  object of each step (it is the exchange's `Sink`), and a complete answer goes to the
  client transport in one write from the upstream protocol's callback;
* the slow path (`dataplane/slowpath.py`): a coroutine when no connection is idle
  (connect, or wait in the pool's queue), when the body streams, or after a failure moved
  the request on;
* streaming (`dataplane/streaming.py`): a coroutine forwards an answer that is not
  complete (SSE cut on event boundaries, chunked or large bodies), with flow control both
  ways; a stream never ends in a way that looks like success when it did not succeed.

What comes after an attempt that was not forwarded (the attempts plan asked, failover, kill
answers) is its base's, `dataplane/moves.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from gateway.dataplane.answerparsing import HIGH_WATER
from gateway.dataplane.attempts import HOLD, PASS, PLAN, SoFar, answered, on_head
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.inflight import Aborted
from gateway.dataplane.jsonpeek import ModelField, rewrite_model
from gateway.dataplane.moves import Moves
from gateway.dataplane.ports import FlightHost
from gateway.dataplane.request import Request
from gateway.dataplane.slowpath import outcome_of, run
from gateway.dataplane.spans import AttemptSpan
from gateway.dataplane.streaming import stream
from gateway.domain.routing import RoutePlan, Target
from gateway.errors import (
    DrillFault,
    UpstreamClosed,
    UpstreamError,
    UpstreamStale,
)

__all__ = ["Flight"]

_FIRST = SoFar()  # (immutable: shared by every flight's first attempt)


class Flight(Moves):
    """A routed request being forwarded (one per request that reaches the upstream side); it
    is its own in-flight `Handle` (kills find it by route and version, and cut its exchange)."""

    __slots__ = ("budget", "complete", "counted", "deadline", "faulted", "field", "plan", "prefix",
                 "proxy", "raw_target", "req", "routing_path", "started", "task", "whole")

    # Made with no argument and started at once, `Flight().start(...)`: a class's Python
    # `__init__` is called from C, which costs about 450 CPU instructions more a request
    # than a method called from Python code (`object.__init__` is C, and checks no more)
    __init__ = object.__init__

    def start(self, proxy: FlightHost, req: Request, plan: RoutePlan, target: Target,
              decision: str, prefix: bytes | None, complete: bool, field: ModelField | None,
              raw_target: bytes, routing_path: str, faulted: str | None = None,
              counted: bool = True) -> None:
        """Start a routed request's forwarding (made and started in one call: a call less per
        request): it is `req.flight` from then on, findable by kills, and sent now on an idle
        pooled connection, or its slow path runs. `faulted`: a drill request's version that
        must seem to fail. `counted`: its outcome counts toward canary analysis (and outlier
        detection): not past its sticky key's `analysis.max_per_key`."""
        self.route = plan.name  # the Handle's fields: what a kill matches, what it cuts
        self.version: str | None = None
        self.exchange: Exchange | None = None  # the exchange this flight holds, if any
        self.aborted: Aborted | None = None
        self.proxy = proxy
        self.req = req
        self.plan = plan
        self.target = target
        self.decision = decision
        self.counted = counted  # (judged: told to canary analysis and outlier detection)
        self.prefix = prefix        # the body (complete) or its first bytes, in memory
        self.complete = complete    # the whole body is in `prefix`: it can be sent again
        self.field = field
        self.raw_target = raw_target
        self.routing_path = routing_path
        self.so_far = _FIRST
        self.targets: tuple[Target, ...] | None = None
        self.task: asyncio.Task[None] | None = None
        self.whole = False          # fast path: waiting for a small answer to be complete
        self.started = 0.0
        self.deadline = proxy.clock.now + plan.total_timeout
        self.budget = None if plan.retry is None else proxy.budget(plan)
        self.att: AttemptSpan | None = None  # this attempt's trace span (tracing on)
        self.faulted = faulted  # a drill request: the version it must see fail
        self.new_connection = False  # the next attempt opens a connection (a stale one failed)
        # start (the request may be answered before this returns: it is the flight first)
        req.flight = self
        proxy.inflight.handles.add(self)
        if self.budget is not None:
            self.budget.request(proxy.clock.now)
        if not (complete and self._fast()):
            self._spawn(run(self))

    # ------------------------------------------------------------------ entry points

    def client_gone(self) -> None:
        """The client went away: stop whatever is under way, and free the backend side."""
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.close()
            ex.release()
        self.proxy.inflight.handles.discard(self)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.task = self.proxy.loop.create_task(coro)

    # ------------------------------------------------------------------ the fast path

    def _body(self) -> bytes:
        body = self.prefix or b""
        target = self.target
        if self.field is not None and target.model:
            body = rewrite_model(body, self.field, target.model)
        return body

    def _fast(self) -> bool:
        """Send the request now on an idle pooled connection; False if there is none."""
        target = self.target
        if self.so_far is not _FIRST or self.aborted is not None:
            # after a failure, or cut by a kill before it went out: a kill came since
            # routing, and what the table holds now decides (`_passed_kill`). What ended the
            # wait may have been a timer, not bytes (a connect timeout, the deadline sweeper,
            # a kill): the shared clock is read afresh, or a pooled connection idle past
            # backend_idle_timeout looks as young as the last socket event made it
            self.proxy.clock.now = self.proxy.loop.time()
            self.aborted = None
            why = self.proxy.killed_since(self.plan, target.name)
            if why is not None:
                if self._passed_kill(why):
                    self._continue()
                return True
        if self.faulted is not None and target.name == self.faulted:
            self.started = self.proxy.clock.now
            self._failed(DrillFault())  # as if never reached: the plan moves it on
            return True
        proxy = self.proxy
        try:  # (a subscript costs less than a `get` call)
            pool = proxy.upstreams.pools[target.origin]
        except KeyError:
            pool = proxy.upstreams.pool(target.origin)
        ex = pool.take_idle()
        if ex is None:
            return False
        body = self.prefix or b""  # (`_body`, inline)
        if self.field is not None and target.model:
            body = rewrite_model(body, self.field, target.model)
        req = self.req
        self.version = target.name
        self.exchange = ex
        self.whole = False
        self.started = proxy.clock.now
        traceparent = None
        span = req.span
        if span is not None:
            self.att = span.attempt(self.plan.name, target.name, target.url,
                                    req.method.decode("latin-1"))
            traceparent = self.att.traceparent
        ex.begin_drive(self, proxy.request_head(req, target, pool.host_line, len(body),
                                                self.raw_target, traceparent, body),
                       self.deadline, self.plan.idle_timeout, req.method == b"HEAD",
                       target.path_bytes)
        return True

    def upstream(self, ex: Exchange) -> None:
        """The exchange moved on (called from the upstream protocol's callbacks)."""
        if ex is not self.exchange:
            return
        err = ex.error
        if err is not None:
            self.exchange = None
            ex.release()
            if type(err) is UpstreamClosed and not ex.got_bytes:
                err = UpstreamStale(str(err))  # a pooled connection closed while idle
            self._failed(err)
            return
        if not ex.headers_done:
            return
        if self.att is not None:
            self.att.answered(ex.status)
            self.att = None
        if ex.complete:
            if ex.status < 400:
                self.exchange = None  # the common case, as `_judge` would: nothing to decide
                # (no `ex.detach()`: `write_complete` releases `ex`, which detaches it; nor
                # `_finished()`: the answer written, `Proxy.done` has taken this flight out)
                self.proxy.write_complete(self, ex)
                return
            self._judge(ex, ex.peek_body())
            return
        if self.whole:
            if ex.buffered <= HIGH_WATER:
                return  # still coming
            # Too large to be held whole (reading from the backend is paused now, so no
            # callback will come again): judged as it is, forwarded as it comes if it goes.
            self.whole = False
            self._judge(ex, None)
            return
        status = ex.status
        if status >= 400:  # (the attempts plan's `on_head`; a 2xx does not ask)
            how = on_head(self.plan.config.protocol, status, self.routing_path, self.complete,
                          self.proxy.policy(self.plan), self.req.method)
            if how == HOLD:
                self.whole = True  # the error body decides; it is small
                return
            if how == PLAN:
                self._judge(ex, None)
                return
        length = ex.length
        if length is not None and length <= HIGH_WATER:
            self.whole = True  # a small answer: it will be written in one piece
            return
        ex.detach()
        self._spawn(stream(self, ex))

    def _judge(self, ex: Exchange, body: bytes | None) -> None:
        """An answer's head is in, and its whole body (`body`) or not (None): forward it, or
        move the request on, by the rules the slow path follows too (`on_head`, `answered`,
        the attempts plan). Nothing of it has been forwarded yet."""
        protocol = self.plan.config.protocol
        status = ex.status
        how = on_head(protocol, status, self.routing_path, self.complete,
                      self.proxy.policy(self.plan), self.req.method)
        if how == PASS:
            self._forward_answer(ex)
            return
        outcome = answered(protocol, status, self.routing_path, body if how == HOLD else None,
                           ex.headers, self.req.method, self.asked_name())
        if self._next(outcome, None, ex):
            self._continue()

    def _forward_answer(self, ex: Exchange) -> None:
        ex.detach()
        if ex.complete:
            self.exchange = None
            self.proxy.write_complete(self, ex)
            self._finished()
        else:
            # the flight keeps the exchange until the streaming task takes it: a kill or the
            # client leaving before that task's first step still finds (and cuts) it
            self.exchange = ex
            self._spawn(stream(self, ex))

    def _failed(self, err: UpstreamError) -> None:
        aborted = self.aborted
        if aborted is not None:  # cut by a kill: the backend did nothing wrong
            self._answer_killed(aborted)
            return
        self.proxy.count_error(self.plan, self.target, err, self.started)
        self._trace_failed(err)
        if self._next(outcome_of(err), err, None):
            self._continue()

    def _continue(self) -> None:
        if self.new_connection or not (self.complete and self._fast()):
            self._spawn(run(self))
