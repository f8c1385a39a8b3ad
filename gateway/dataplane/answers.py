"""The gateway's own answers (the one place data-plane errors map to HTTP, CONTRACT §3), the
x-killgate-* lines every answer carries, what a request's record holds of its answer, and
what each attempt's outcome tells the observers and counters. A base of `proxy.Proxy`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from gateway.dataplane.answerlabels import Labels
from gateway.dataplane.clock import Clock
from gateway.dataplane.headers import own_head
from gateway.dataplane.inflight import Aborted
from gateway.dataplane.request import BadBody, BodyTimeout, RefusedBody, Request
from gateway.dataplane.servedmodels import Asked, ServedModels
from gateway.domain.routing import (
    FALLBACK,
    KILLED,
    PINNED,
    STATE_UNKNOWN,
    RoutePlan,
    Target,
)
from gateway.errors import UpstreamError, UpstreamOverflow, UpstreamTimeout
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["Answers", "Observer", "Observers"]

log = logging.getLogger("killgate.proxy")

_JSON = b"application/json"


class Observer(Protocol):
    """Hook for passive health (outlier detection) and canary analysis: told how each
    exchange went. `kind`: "ok", "5xx", "connect" (never reached the backend), "error",
    "not_ready" (a protocol-aware "model not loaded" answer), or "overflow" (our queue for
    that backend was full or timed out: not its failure)."""

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None: ...


class Observers(Observer, Protocol):
    """What the proxy tells (`wiring.dataplane.Outcomes`): an exchange's outcome, and the
    answer of a request a client pinned (`x-killgate-pin`) apart: a pin is the client's
    choice, so what judges a version (outlier detection, canary analysis) is not told of it
    (live traffic is; a pinned request's connect error or overflow is told as any other).
    Counted, a client pinning requests the canary's model answers 500 ejected it and had
    it rolled back, and pinned requests it answers hid a failing one."""

    def pinned(self, route: str, version: str, kind: str, latency: float) -> None: ...


def _error_body(type_: str, message: str, **extra: object) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message, **extra}}).encode()


class Answers:
    """The proxy's answers and records (see the module docstring)."""

    metrics: Metrics
    observer: Observers | None
    clock: Clock
    loop: asyncio.AbstractEventLoop
    max_body: int
    _labels: Labels  # x-killgate-* lines
    #: not-ready answers (route, version, latency) of requests not ended yet (`dropped`)
    unready: dict[Request, list[tuple[str, str, float]]]
    #: the models each version answered, on protocol routes (`note_served`, `dropped`)
    models: ServedModels

    # ------------------------------------------------------------------ every answer

    def labels(self, plan: RoutePlan, target: Target | None, decision: str) -> bytes:
        """The x-killgate-* lines of an answer (cached; a part that is unknown is left out),
        remembered as the last found (`Labels`)."""
        version = target.name if target is not None else ""
        key = (plan.name, version, decision)
        memo = self._labels
        lines = memo.by.get(key)
        if lines is None:
            lines = b"x-killgate-route: %s\r\n" % plan.name.encode()
            if version:
                lines += b"x-killgate-version: %s\r\n" % version.encode()
            if decision:
                lines += b"x-killgate-decision: %s\r\n" % decision.encode()
            memo.by[key] = lines
        memo.route, memo.version, memo.decision, memo.lines = plan.name, version, decision, lines
        return lines

    @staticmethod
    def served(req: Request, plan: RoutePlan | None, target: Target | None, decision: str,
               status: int, bytes_out: int = 0) -> None:
        """An answer is on its way: what telemetry records about it."""
        if req.span is not None:
            req.span.answered(status, plan.name if plan is not None else "",
                              target.name if target is not None else "", decision)
        rec = req.rec
        rec.route = plan.name if plan is not None else ""
        rec.version = target.name if target is not None else ""
        rec.decision = decision
        rec.status = status
        rec.bytes_out = bytes_out

    # ------------------------------------------------------------------ outcomes

    def observed(self, plan: RoutePlan, target: Target, status: int, started: float,
                 decision: str = "", counted: bool = True) -> None:
        observer = self.observer
        if observer is not None:
            kind = "5xx" if status >= 500 else "ok"
            if decision != PINNED and counted:
                observer.outcome(plan.name, target.name, kind, self.clock.now - started)
            else:  # not the split's: canary analysis is not told of it
                observer.pinned(plan.name, target.name, kind, self.clock.now - started)

    def note_served(self, target: Target, model: Asked | None) -> None:
        """A version's 2xx answer forwarded on a protocol route: its backend holds `model`."""
        self.models.note(target, model)

    def dropped(self, req: Request, plan: RoutePlan, target: Target, status: int,
                not_ready: bool, started: float, model: Asked | None = None) -> None:
        """An answer not forwarded (the request moves on): counted for outlier detection.

        A not-ready answer is told to the observers only once the request has ended or its
        answer streams (`settle_unready`), and only if no version could serve it is it forgotten
        (`not_ready_anywhere`): a model or model version that no backend holds is the
        client's mistake, and a client must not be able to eject a healthy version, or fail
        a canary's analysis, by naming one. The stable's is told only for a `model` it has
        answered before (servedmodels.py): one only a canary holds is not its outage."""
        latency = self.loop.time() - started
        if not_ready:
            self.metrics.inc("killgate_upstream_errors_total",
                             (plan.name, target.name, "not_ready"),
                             label_names=("route", "version", "kind"))
            # (flight None: the request has ended; the stable: only for a model it answered)
            if self.observer is not None and req.flight is not None \
                    and (target.name != plan.stable
                         or self.models.answered(target, model)):
                self.unready.setdefault(req, []).append((plan.name, target.name, latency))
        elif self.observer is not None:
            flight = req.flight  # (pinned, or past its sticky key's bound: not judged)
            if getattr(flight, "decision", None) == PINNED \
                    or not getattr(flight, "counted", True):
                self.observer.pinned(plan.name, target.name, "5xx", latency)
            else:
                self.observer.outcome(plan.name, target.name, "5xx", latency)

    def not_ready_anywhere(self, req: Request) -> None:
        """Every version that could serve `req` answered "model not found / not ready": its
        versions' answers held (`dropped`) blame none of them."""
        self.unready.pop(req, None)

    def settle_unready(self, req: Request) -> None:
        """`req` has ended, or its answer from another version has begun to stream: the
        not-ready answers held for it count now."""
        held = self.unready.pop(req, None)
        if held and self.observer is not None:
            for route, version, latency in held:
                self.observer.outcome(route, version, "not_ready", latency)

    def moved(self, plan: RoutePlan, reason: str) -> None:
        if reason.startswith("retry_"):
            self.metrics.inc("killgate_retries_total", (plan.name, reason.removeprefix("retry_")),
                             label_names=("route", "cause"))
        else:
            self.metrics.inc("killgate_failovers_total", (plan.name,), label_names=("route",))

    def count_error(self, plan: RoutePlan, target: Target, exc: UpstreamError,
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

    # ------------------------------------------------------------------ our own answers


    def _reply(self, req: Request, status: int, body: bytes, plan: RoutePlan | None,
               target: Target | None, decision: str, extra: bytes = b"",
               content_type: bytes = _JSON) -> None:
        ours = self.labels(plan, target, decision) if plan is not None else b""
        self.served(req, plan, target, decision, status, len(body))
        keep = req.will_keep_alive()
        connection = (None if keep and not req.http10 else b"keep-alive" if keep else b"close")
        head = own_head(status, content_type, len(body), ours, extra, connection)
        req.respond(head if req.method == b"HEAD" else head + body)

    def _error(self, req: Request, status: int, type_: str, message: str,
               plan: RoutePlan | None = None, target: Target | None = None,
               decision: str = "", extra: bytes = b"", **fields: object) -> None:
        self._reply(req, status, _error_body(type_, message, **fields), plan, target, decision,
                    extra)

    def _bad(self, req: Request, reason: str, message: str) -> None:
        """A request refused for its shape: 400, counted, logged at debug (a client can send
        these at will: never a warning or a traceback per request)."""
        self.metrics.inc("killgate_bad_requests_total", (reason,), label_names=("reason",))
        event(log, "bad_request", logging.DEBUG, reason=reason, message=message)
        self._error(req, 400, "bad_request", message)

    def too_large(self, req: Request, plan: RoutePlan | None) -> None:
        self._error(req, 413, "body_too_large", f"the request body exceeds {self.max_body} "
                    "bytes", plan)

    def unavailable(self, req: Request, plan: RoutePlan, decision: str,
                    scope: str | None = None) -> None:
        """Killed or nothing can serve: the route's fallback, else a 503."""
        fb = plan.fallback
        if plan.killed == STATE_UNKNOWN:  # not a kill: nothing can serve until we know
            self.metrics.inc("killgate_state_unknown_answers_total")
            decision = FALLBACK
            if fb is None:
                self._error(req, 503, "state_unknown", "this gateway has not loaded the kill "
                            "state yet; retry shortly", plan=plan, decision=FALLBACK,
                            extra=b"retry-after: 1\r\n")
                return
        if fb is not None:
            extra = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1", "replace"))
                             for k, v in fb.headers.items())
            self._reply(req, fb.status, plan.fallback_body, plan, None, decision, extra)
            return
        if decision == KILLED:
            self._error(req, 503, "killed", "this model route is disabled", plan=plan,
                        decision=KILLED, scope=scope or plan.killed or "route")
            return
        if plan.override_unservable and not plan.killed:
            names = ", ".join(repr(n) for n in plan.override_unservable)
            self._error(req, 503, "unavailable", f"route {plan.name!r} is latched at runtime "
                        f"to version(s) {names}, which this instance's config does not have; "
                        "no other version serves while the override stands: run `killgate "
                        f"release {plan.name}`, or load a config with those versions",
                        plan=plan, decision=decision, override_unservable=list(
                            plan.override_unservable))
            return
        self._error(req, 503, "unavailable", "no version of this route can serve right now",
                    plan=plan, decision=decision)

    def unavailable_killed(self, req: Request, plan: RoutePlan, target: Target,
                           why: Aborted) -> None:
        self.metrics.inc("killgate_inflight_aborted_total", (plan.name,), label_names=("route",))
        if why.scope == "version":
            self._error(req, 503, "killed", "this model version is disabled", plan=plan,
                        target=target, decision=KILLED, scope="version")
            return
        self.unavailable(req, plan, KILLED, why.scope)

    def upstream_failed(self, req: Request, plan: RoutePlan, target: Target, decision: str,
                        exc: UpstreamError, note: str = "") -> None:
        """`note`: what the client should know besides (versions not failed over to)."""
        if isinstance(exc, UpstreamOverflow):
            why = ("no connection to the backend came free in time"
                   if exc.kind() == "queue_timeout" else "the backend's connections and queue "
                   "are full")
            self._error(req, 503, "overloaded", f"{why}; retry shortly{note}", plan=plan,
                        target=target, decision=decision, extra=b"retry-after: 1\r\n")
            return
        if isinstance(exc, UpstreamTimeout):
            self._error(req, 504, "upstream_timeout",
                        f"the backend did not answer in time ({exc.phase} timeout){note}", plan=plan,
                        target=target, decision=decision)
            return
        self._error(req, 502, "upstream_failed", f"the backend failed: {exc}{note}", plan=plan,
                    target=target, decision=decision)

    def body_failed(self, req: Request, plan: RoutePlan | None, target: Target | None,
                    decision: str, exc: Exception) -> None:
        """The request body could not be read whole: 413, 408 or 400 (or, once the answer
        has begun, an aborted connection)."""
        if req.responded:
            req.abort()
            return
        req.keep_alive = False
        if isinstance(exc, BodyTimeout):
            req.conn.linger_end = -1.0  # (too slow for a deadline: not waited for again)
            self._error(req, 408, "request_timeout", str(exc), plan=plan, target=target,
                        decision=decision)
        elif isinstance(exc, RefusedBody):
            self._bad(req, "model_body", str(exc))
        elif isinstance(exc, BadBody):
            self._bad(req, "body", f"malformed request body: {exc}")
        else:
            self._error(req, 413, "body_too_large", f"the request body exceeds {self.max_body} "
                        "bytes", plan=plan, target=target, decision=decision)
