"""A request's end on the proxy's side: the fast path's one write of a whole answer to the
client (`write_complete`), a client that went away (`gone`), and the one place a finished
request is reported to telemetry (`done`, with 499 for a routed request left unanswered).

A base of `proxy.Proxy`, which owns the state read here (the `Handler`'s `gone` and `done`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.dataplane.answerlabels import Labels
from gateway.dataplane.answers import Observers
from gateway.dataplane.clock import Clock
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.flight import Flight
from gateway.dataplane.headers import answer_head, content_type, is_event_stream, response_head
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.notready import could_be_not_ready, plain, says_unloaded
from gateway.dataplane.outgoing import forwarded_for
from gateway.dataplane.peekbudget import PeekBudget
from gateway.dataplane.ports import Forwarding
from gateway.dataplane.request import Request
from gateway.dataplane.servedmodels import Asked, ServedModels
from gateway.dataplane.shadowtap import Tap
from gateway.domain.routing import PINNED, RoutePlan, Target
from gateway.forwarded import ClientAddress
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import Recorder

__all__ = ["CLIENT_CLOSED", "Finish"]

#: the status recorded for a routed request whose client went away before any answer
#: (nginx's "client closed request"): a backend that hangs shows, not looks idle
CLIENT_CLOSED = 499


class Finish:
    """How the proxy ends a request (see the module docstring)."""

    inflight: Inflight
    clock: Clock
    loop: asyncio.AbstractEventLoop
    observer: Observers | None
    recorder: Recorder
    client_address: ClientAddress | None
    _labels: Labels  # x-killgate-* lines (answers.py)
    unready: dict[Request, list[tuple[str, str, float]]]  # (answers.py)
    peeks: PeekBudget[Request]  # bodies held to read their `model` (proxy.py)
    _spare: Flight  # the last finished request's flight (proxy.py's `_route` reuses it)
    models: ServedModels  # (answers.py)
    metrics: Metrics

    if TYPE_CHECKING:  # (`Answers`' and `Outgoing`'s, the other bases of `Proxy`)
        def labels(self, plan: RoutePlan, target: Target | None, decision: str) -> bytes: ...

        def tap(self, flight: Forwarding) -> Tap | None: ...

        def settle_unready(self, req: Request) -> None: ...

        def note_served(self, target: Target, model: Asked | None) -> None: ...

    def write_complete(self, flight: Forwarding, ex: Exchange) -> None:
        """The fast path's end: the whole answer has arrived; one write to the client."""
        req = flight.req
        plan, target, decision = flight.plan, flight.target, flight.decision
        route, version = plan.name, target.name
        status = ex.status
        body = ex.finish()  # (back in its pool: `ex` holds this answer until its `_reset`)
        if plan.shadow_config is not None and (tap := self.tap(flight)) is not None:
            tap.answer(status, ex.headers, body)  # a copy goes once this answer is written
        if plan.aware and 200 <= status < 300:
            self.note_served(target, flight.asked_model())  # (it holds that model)
        length: int | None = len(body)
        if ex.head:  # (an answer to HEAD: the exchange was begun so, a flag, not a compare)
            length, body = ex.length, b""
        elif status < 200 or status == 204 or status == 304:  # (not `in` a tuple: a call)
            length, body = None, b""
        span = req.span
        if span is not None:
            span.answered(status, route, version, decision)
        rec = req.rec  # (what `served` records, inline: this is the path of most answers)
        rec.route = route
        rec.version = version
        rec.decision = decision
        rec.status = status
        rec.bytes_out = len(body)
        rec.first_byte = 0.0  # (not streamed; written, as a recorder's read of the class's
        # default through the instance costs about 250 CPU instructions more)
        if span is not None:
            span.body(body)
        started = flight.started
        rec.upstream = ex.head_at - started
        observer = self.observer
        if observer is not None:
            kind = "ok" if status < 400 else self._outcome(flight, status, ex.headers, body)
            if decision != PINNED and flight.counted:  # (a method call each: no bound method)
                observer.outcome(route, version, kind, self.clock.now - started)
            else:  # pinned, or past its sticky key's bound: the judges are not told of it
                observer.pinned(route, version, kind, self.clock.now - started)
        keep = req.keep_alive and req.body_done and not req.conn.closing  # will_keep_alive
        connection = (None if keep and not req.http10 else b"keep-alive" if keep else b"close")
        lab = self._labels  # (the last answer's lines, found by `is`: most answers')
        if route is lab.route and version is lab.version and decision is lab.decision:
            ours = lab.lines
        else:
            ours = self.labels(plan, target, decision)
        if ex.general:  # (positional: a call with keywords is not specialised)
            if body and is_event_stream(content_type(ex.headers)):
                # a short stream, whole in the read that brought its head: its first byte
                # goes now (killgate_time_to_first_byte_seconds counts every stream)
                rec.first_byte = self.clock.now
            data = response_head(status, ex.headers, ours, length, connection, False, False,
                                 body)
        else:  # (the fields were classified as they came: no second pass over them)
            data = answer_head(status, ex.lines, ex.dated, ours, length, connection,
                               self.clock.now, body)
        req.respond(data)

    def _outcome(self, flight: Forwarding, status: int, raw: list[tuple[bytes, bytes]],
                  body: bytes) -> str:
        """What an error answer forwarded whole tells the judges: "not_ready" for a "model
        not loaded" answer (notready.py) to a request whose body streamed (it could not
        move: the body is not held to send again) from a version that has answered that
        model (2xx) since the process started: it unloaded it, and is ejected after
        `consecutive_gateway_failures` as if the request had moved. Before, such answers
        counted as "ok": a canary that unloaded its model kept its share of 100 KB V2
        requests, every one answered 404, for good (tests/test_notready_streamed.py). A
        model it never answered is the client's to name: never blamed (servedmodels.py), nor
        an answer that may be about the client's key (`says_unloaded`)."""
        plan, target = flight.plan, flight.target
        protocol = plan.config.protocol
        if flight.complete or not plan.aware or not could_be_not_ready(
                protocol, status, flight.routing_path, flight.req.method) \
                or not self.models.answered(target, flight.asked_model()):
            return "5xx" if status >= 500 else "ok"
        text = plain(body, raw)
        if text is None or not says_unloaded(protocol, status, flight.routing_path, text,
                                             flight.req.method, flight.asked_name()):
            return "5xx" if status >= 500 else "ok"
        self.metrics.inc("killgate_upstream_errors_total", (plan.name, target.name, "not_ready"),
                         label_names=("route", "version", "kind"))
        return "not_ready"

    def gone(self, req: Request) -> None:
        flight = req.flight
        if isinstance(flight, Flight):
            flight.client_gone()
            span = req.span
            if span is not None and req.rec.status:  # its answer had begun; the rest is lost
                span.event("killgate.stream_cut", {"killgate.cause": "connection_lost"})

    def done(self, req: Request) -> None:
        """The one place a finished request is reported to telemetry."""
        flight = req.flight
        if flight is not None:
            req.flight = None
            peeks = self.peeks
            if peeks.by:  # (what its body held while its `model` was read, if it did)
                peeks.release(req)
            inflight = self.inflight  # (one fewer in flight: `wait_idle` hears of the last)
            inflight.count = count = inflight.count - 1
            if not count and inflight.idle is not None:
                inflight.idle.set()
            inflight.handles.discard(flight)  # (_ADMITTED: never in it)
            # (started again by `Proxy._route` once nothing refers to it; _ADMITTED never is:
            # the module and every request admitted before routing refer to it)
            self._spare = flight  # type: ignore[assignment]
            if self.unready:  # (a protocol route's request that moved on "not ready")
                if req.rec.status:
                    self.settle_unready(req)
                else:  # the client left before any version answered it: whether another
                    self.unready.pop(req, None)  # could serve it is not known, none blamed
        rec = req.rec
        span = req.span
        if span is not None:
            req.span = None
            rec.trace_id = span.trace_id  # (the access log's)
            span.finish(bool(rec.status))
        if rec is None:
            return
        if rec.status:
            rec.end = self.clock.now
        elif isinstance(flight, Flight):  # the client went away before any answer
            rec.route, rec.version = flight.plan.name, flight.target.name
            rec.decision, rec.status = flight.decision, CLIENT_CLOSED
            rec.end = self.loop.time()  # (no bytes arrived: the shared clock is stale)
        else:
            return  # (before it was routed)
        recorder = self.recorder
        if recorder.detailed:
            trusted = self.client_address  # the right-most untrusted hop behind proxies
            rec.peer = (req.remote or "") if trusted is None else trusted.client(
                req.remote, forwarded_for(req))
            rid = req.headers.get_bytes(b"x-request-id")
            rec.request_id = rid.decode("latin-1") if rid is not None else ""
            rec.method = req.method.decode("latin-1")
            rec.path = req.path
            rec.bytes_in = req.body_size
        recorder.done(rec)
