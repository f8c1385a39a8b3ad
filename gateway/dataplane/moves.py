"""A flight's next step once an attempt has not been forwarded: the attempts plan asked
(retry, failover to the next version, the route's fallback, or an answer here), a kill that
came after routing (`_passed_kill`) and the 503 killed answer, and letting a flight go.

The base of `flight.Flight` (on `inflight.Handle`), which owns the state read here; its slow
path and streaming call these steps through `ports.Forwarding`. Imports nothing above `ports.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.dataplane.attempts import (
    ANSWER,
    FRESH,
    MOVE,
    UNDELIVERED,
    Next,
    Outcome,
    SoFar,
    next_attempt,
    resend_safe,
)
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.headerview import BadHeader
from gateway.dataplane.heldmodel import held_model
from gateway.dataplane.inflight import Aborted, Handle
from gateway.dataplane.jsonpeek import ModelField, Unreadable
from gateway.dataplane.ports import FlightHost
from gateway.dataplane.request import Request
from gateway.dataplane.retry import RetryBudget
from gateway.dataplane.servedmodels import Asked, model_key
from gateway.dataplane.spans import AttemptSpan, trace_ejection
from gateway.domain.routing import FAILOVER, FALLBACK, RoutePlan, Target
from gateway.errors import UpstreamError, UpstreamTimeout

__all__ = ["Moves"]


class Moves(Handle):
    """The steps of a flight between its attempts (see the module docstring)."""

    # the fields a step changes (`Flight.start` sets them first); the others are `Flight`'s
    __slots__ = ("att", "decision", "new_connection", "so_far", "target", "targets")

    att: AttemptSpan | None  # the attempt's trace span (tracing on)
    decision: str
    new_connection: bool  # the next attempt opens a connection (a stale one failed)
    so_far: SoFar
    target: Target
    targets: tuple[Target, ...] | None  # the failover order (asked at the first move)

    # read here, `Flight`'s
    proxy: FlightHost
    req: Request
    plan: RoutePlan
    complete: bool
    deadline: float  # the route's total deadline (loop clock)
    budget: RetryBudget | None
    started: float
    prefix: bytes | None
    field: ModelField | None  # (None: none, or not read: `_rewritable` reads it for a move)
    routing_path: str

    def streaming(self) -> bool:
        return self.req.responded

    if TYPE_CHECKING:
        def _forward_answer(self, ex: Exchange) -> None: ...

    def asked_model(self) -> Asked | None:
        """The inference the request asks of its current target (servedmodels.py), on a
        protocol route."""
        return model_key(self.plan.config.protocol, self.req.method, self.routing_path,
                         self.field, self.prefix, self.complete, self.target.model)

    def asked_name(self) -> str | None:
        """The model an `openai` request asks its current target for, None when unread (a
        not-ready answer must name it: notready.py); only asked of a held error answer."""
        if self.plan.config.protocol != "openai":
            return None
        asked = self.asked_model()
        return None if asked is None else asked[1]

    # ------------------------------------------------------------------ the plan

    def _next(self, outcome: Outcome, err: UpstreamError | None, ex: Exchange | None) -> bool:
        """Ask the plan; True when the request goes on (the target is updated), False when
        it has been answered here."""
        proxy = self.proxy
        if self.targets is None:  # (asked once, before any move: `target` is the first)
            self.targets = self._failover_order(proxy)
        plan = self.plan
        budget = self.budget
        retry = plan.retry
        past = proxy.loop.time() >= self.deadline
        req = self.req
        nxt = next_attempt(self.so_far, outcome, len(self.targets), self.complete,
                           proxy.policy(plan),
                           lambda: not past and budget is not None and retry is not None
                           and budget.allow(proxy.loop.time(), retry.budget),
                           lambda: resend_safe(req.method, req.raw_headers))
        late = past and nxt.action != ANSWER
        if late:
            # The route's total deadline has passed: no attempt goes out any more (sent now,
            # it would be answered 504 once the backend had acted on it, or served late).
            nxt = Next(ANSWER, "deadline", self.so_far)
            if err is not None and not isinstance(err, Aborted):
                err = UpstreamTimeout("total", delivered=err.delivered)
        if nxt.action == ANSWER:
            fallback = nxt.reason in ("no_other_version", "deadline") \
                and plan.fallback is not None
            if isinstance(err, Aborted) and not fallback:  # (killed since routing, and no
                self._answer_killed(err)  # version left: the fallback, as if routed now)
            elif ex is not None:
                if outcome.not_ready and not late:  # no version that can serve holds it
                    proxy.not_ready_anywhere(self.req)
                self._forward_answer(ex)
            elif fallback:
                self._finished()
                proxy.unavailable(self.req, plan, FALLBACK)
            else:
                assert err is not None
                self._finished()
                proxy.upstream_failed(self.req, plan, self.target, self.decision, err,
                                      self._skipped(proxy.peek_bytes) if nxt.reason == "no_other_version"
                                      and (self.field is None or self.field.form) else "")
            return False
        self.so_far = nxt.so_far
        self.new_connection = nxt.action == FRESH
        if ex is not None:  # an answer we will not forward: drop it
            self.exchange = None
            if ex.complete:
                ex.take_body()  # read whole: its connection can carry the next request
            else:
                ex.close()
            ex.release()
            proxy.dropped(self.req, plan, self.target, ex.status, outcome.not_ready,
                          self.started, self.asked_model() if outcome.not_ready else None)
        if nxt.action == MOVE:
            to = self.targets[self.so_far.moves - 1]
            span = self.req.span
            if span is not None:
                span.event("killgate.failover", {
                    "killgate.failover.from": self.target.name,
                    "killgate.failover.to": to.name,
                    "killgate.failover.cause": (err.kind() if err is not None
                                                else str(outcome.status))})
            self.target = to
            self.decision = FAILOVER
            proxy.moved(plan, nxt.reason)
        return True

    def _failover_order(self, proxy: FlightHost) -> tuple[Target, ...]:
        """Where this request may go next (the order of the plan it was routed with),
        without a version a latched rollback applied since has taken off (its connect
        hung, its body came slowly): for every request routed after the rollback that
        version is no spare (routing.RoutePlan), and it must not be for these either.
        (Kills since routing: `killed_since`, asked before each attempt.)"""
        order = self.plan.failover_for(self.target.name)
        now = proxy.holder.held.table.by_name.get(self.plan.name)
        if now is not None and now is not self.plan and now.rolled_off:
            order = tuple(t for t in order if t.name not in now.rolled_off)
        if (self.field is None or self.field.form) and any(t.model for t in order):
            order = self._rewritable(order, proxy.peek_bytes)
        return order

    def _rewritable(self, order: tuple[Target, ...], window: int) -> tuple[Target, ...]:
        """The failover order of a request whose body's `model` was not read (routed to a
        version that rewrites nothing, or read and found absent), some of whose next
        versions rewrite it: its `model` is read from what is held of the body (all of a
        body kept whole; the first bytes of one that streams), and rewritten for them.
        When it cannot be (the body streams and was not kept, or it is gzip, another
        charset, JSON a backend could read differently), those versions are left out: the
        request never reaches a version that serves another model with its `model` as
        the client sent it; it fails over to the others, else the route's fallback, else
        its error, which names them (`_skipped`)."""
        req = self.req
        try:
            # (`field` is `Flight`'s slot: this class only reads the others)
            self.field = held_model(req.headers, self.prefix or b"",  # type: ignore[misc]
                                    self.complete, window)
        except (Unreadable, BadHeader) as exc:
            span = req.span
            if span is not None:
                span.event("killgate.failover.skipped", {
                    "killgate.failover.skipped": ",".join(t.name for t in order if t.model),
                    "killgate.failover.skipped.cause": str(exc)})
            return tuple(t for t in order if not t.model)
        return order

    def _skipped(self, window: int) -> str:
        """What a request's error says of the versions `_rewritable` left out (none tried:
        each is in the failover order of the last version tried), and why."""
        names = [t.name for t in self.plan.failover_for(self.target.name) if t.model]
        if not names:
            return ""
        try:
            held_model(self.req.headers, self.prefix or b"", self.complete, window)
        except (Unreadable, BadHeader) as exc:
            return f"; not failed over to {', '.join(names)}, which rewrite the body's " \
                   f"'model': {exc}"
        return ""

    def _trace_failed(self, err: UpstreamError) -> None:
        att, span = self.att, self.req.span
        if att is not None:
            att.failed(err.kind())
            self.att = None
        if span is not None:
            trace_ejection(span, self.proxy.holder.table, self.plan, self.target)

    def _passed_kill(self, why: Aborted) -> bool:
        """The target was killed after this request was routed, before it went out: a
        version kill moves it on as a request that never reached the backend (the next
        version in the failover order, else the route's fallback, else 503 killed); a route
        or global kill answers 503 killed. True when it goes on (the target is updated),
        False when it was answered."""
        if why.scope != "version":
            self._answer_killed(why)
            return False
        if self.att is not None:  # (the slow path's span of the attempt not made)
            self.att.failed("killed")
            self.att = None
        return self._next(Outcome(UNDELIVERED), why, None)

    def _answer_killed(self, why: Aborted) -> None:
        # (a kill comes from the state sync, not from a data-plane socket: the shared clock
        # is read afresh for this answer's record and its connection's keep-alive deadline)
        self.proxy.clock.now = self.proxy.loop.time()
        span = self.req.span
        if span is not None:
            if self.att is not None:
                self.att.failed("killed")
                self.att = None
            span.event("killgate.kill", {"killgate.kill.scope": why.scope,
                                         "killgate.version": self.target.name,
                                         "killgate.inflight": 1})
        self._finished()
        self.proxy.unavailable_killed(self.req, self.plan, self.target, why)

    # ------------------------------------------------------------------ letting it go

    def _finished(self) -> None:
        self.proxy.inflight.handles.discard(self)

    def _close_ex(self) -> None:
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.close()
            ex.release()
