"""The data plane's decisions: check a request, match a route, choose a version.

Owns the request path of CONTRACT §3 up to the backend. Reads the routing snapshot once
per request from the `TableSource` (no I/O for any decision); forwarding, attempts and
streaming are `dataplane/flight.py`'s; the gateway's own answers (the one place that maps
data-plane errors to HTTP) and what is recorded of every answer are
`dataplane/answers.py`'s, the base of `Proxy`; what flights ask of it besides (the head
for the backend, retry policy and budget, the shadow tap) `dataplane/outgoing.py`'s; a
request's end (the fast path's one write of a whole answer, the report to telemetry)
`dataplane/finish.py`'s; reading the body's `model` for routing `dataplane/modelpeek.py`'s
(a base too); the targets, Hosts and matches it remembers `dataplane/lookups.py`'s (a
base); the version chosen off `_route`'s inline path taken on, and the sticky key's share
counted, `dataplane/chosen.py`'s (a base). The connection (`dataplane/protocol.py`) calls
`handle` from its parser callback: a request whose route is decided and whose body is in
memory goes on without a Task (only a body still to be read, or the model peek of a large
body, needs a coroutine here).
"""

from __future__ import annotations

import asyncio
import random
from sys import getrefcount

from gateway.dataplane.answerlabels import Labels
from gateway.dataplane.answers import Observer, Observers
from gateway.dataplane.attempts import Policy
from gateway.dataplane.chosen import Chosen
from gateway.dataplane.drillfault import FaultGate
from gateway.dataplane.finish import Finish
from gateway.dataplane.flight import Flight
from gateway.dataplane.formpeek import body_kind
from gateway.dataplane.heldmodel import FORM_NOT_REWRITTEN
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.jsonpeek import ModelField
from gateway.dataplane.lookups import LastMatch, Lookups
from gateway.dataplane.modelpeek import ModelPeek
from gateway.dataplane.outgoing import Outgoing
from gateway.dataplane.paths import BadTarget
from gateway.dataplane.peekbudget import PeekBudget
from gateway.dataplane.ports import TableSource
from gateway.dataplane.request import BadHeader, Request
from gateway.dataplane.retry import RetryBudget
from gateway.dataplane.servedmodels import ServedModels
from gateway.dataplane.shadow import Mirror
from gateway.dataplane.spans import RequestTracer, TraceView, trace_choice
from gateway.dataplane.upstream import Upstreams
from gateway.domain.keyquota import KeyQuota
from gateway.domain.modellist import Listing, model_listing, without_model
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import STATE_UNKNOWN, RoutePlan
from gateway.forwarded import ClientAddress
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import NULL, NewRecord, Recorder

__all__ = ["Observer", "Observers", "Proxy"]

_ADMITTED = object()  # a request counted in flight, before (or without) a Flight
#: the weighted split's draw (a module name: an attribute more on the proxy would take it
#: past the 30 a shared-key table holds, RESULTS §27)
_rand = random.random


def _free_refs() -> int:
    """References to a flight held only by the proxy's `_spare` (the attribute, a name, a
    call's argument), as `_route` counts it: counted, not assumed (3.14 borrows some)."""
    held = Proxy.__new__(Proxy)
    spare = held._spare = Flight()
    return getrefcount(spare)


class Proxy(Outgoing, ModelPeek, Finish, Lookups, Chosen):
    """The data-plane request handler (the `Handler` of every data-plane connection)."""

    #: what a free spare flight's count is (`_route`; the connection compares it with its
    #: own to know the proxy keeps one: protocol.py). A class attribute: the instance's
    #: stay at 30 or fewer (tests/test_peek_memory.py, RESULTS §27)
    _free_refs: int

    def __init__(self, holder: TableSource, upstreams: Upstreams, inflight: Inflight,
                 metrics: Metrics, max_body: int, peek_bytes: int,
                 observer: Observers | None = None, scheme: str = "http",
                 max_inflight: int = 10_000, peek_memory: int = 512 << 20,
                 recorder: Recorder = NULL,
                 tracer: RequestTracer | None = None, faults: FaultGate | None = None,
                 shadow: Mirror | None = None,
                 client_address: ClientAddress | None = None) -> None:
        self.max_inflight = max_inflight
        self.max_body = max_body
        self.peek_bytes = peek_bytes
        #: `server.model_peek_memory`: what requests reading their `model` hold of it
        #: (given back when each ends: its prefix is kept to be replayed)
        self.peeks: PeekBudget[Request] = PeekBudget(peek_memory, peek_bytes)
        self.holder = holder
        self.upstreams = upstreams
        self.clock = upstreams.clock
        self.inflight = inflight
        self.metrics = metrics
        self.observer = observer
        self.recorder = recorder  # told how each request went (telemetry/record.py)
        self.tracer = tracer  # None: tracing off, and the request path never looks further
        self.faults = faults or FaultGate(None)
        self.shadow = shadow  # shadow copies (dataplane/shadow.py), for routes with a shadow
        #: trusted proxies (admin.trusted_proxies): None when there are none (the fast path)
        self.client_address = client_address
        self.scheme_b = scheme.encode()
        #: how many requests of each sticky key counted toward canary analysis this window
        self.quota = KeyQuota()
        self.loop = asyncio.get_running_loop()
        self._labels = Labels()  # x-killgate-* lines (answers.py)
        # The last finished request's flight (`Finish.done`), started again for the next
        # routed request when nothing else refers to it (`_route`): as many references as
        # here, its attribute, a name and a call's argument (counted so, not assumed: 3.14
        # borrows some). A Flight made and freed a request costs ~990 CPU instructions (25
        # slots); `start` writes every one of them.
        spare = self._spare = Flight()
        spare.req = None  # (no request yet: parsing.py reads it; None is never free)
        self.unready: dict[Request, list[tuple[str, str, float]]] = {}  # (answers.py)
        self.models = ServedModels()  # (answers.py)
        self._budgets: dict[str, RetryBudget] = {}
        self._policies: dict[str, tuple[object, Policy]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # raw target -> split_target(), the forwarded target encoded
        self._targets: dict[bytes, tuple[str, bytes]] = {}
        self._hosts: dict[bytes | None, str] = {}  # raw Host -> route_host()
        self._forwarded: dict[tuple[bytes, bytes | None], bytes] = {}  # (peer, Host) -> lines
        # (path, Host) -> the route they match in `_last.table`, when no route of that table
        # matches by header fields (None: some route does; every match is made afresh)
        self._last = LastMatch()
        self._matched: dict[tuple[str, str], RoutePlan] | None = None

    # ------------------------------------------------------------------ Handler

    def handle(self, req: Request) -> None:
        req.rec = rec = NewRecord()  # (`RequestRecord(req.started)`, without its call)
        rec.start = req.started
        tracer = self.tracer
        if tracer is not None:
            sampled = tracer.sample(req.traceparent)
            if sampled is not None:  # (the view is built for sampled requests only)
                req.span = tracer.start(sampled, TraceView(req))
        inflight = self.inflight
        if inflight.count >= self.max_inflight:
            # Shed at once (RELIABILITY row 40): admitted requests keep their latency.
            self.metrics.inc("killgate_requests_shed_total")
            self._error(req, 503, "overloaded", "this gateway is at its limit of requests in "
                        "flight; retry shortly", extra=b"retry-after: 1\r\n")
            return
        inflight.count += 1
        req.flight = _ADMITTED
        try:  # (the decision is inline here: a call less on every request)
            table = self.holder.held.table  # (the field itself: `holder.table` is a call)
            cl = req.content_length
            # (a chunked body has no length to check at its head; it may be all in already:
            # behind a pipelined request, or when its head was handed over with its body)
            if (cl is not None and cl > self.max_body) or req.body_size > self.max_body:
                self.too_large(req, None)
                return
            # the same few targets and Hosts, again and again: most of all on one connection
            # (a client asks one endpoint of one Host), so its last ones are compared first
            # (a compare costs less than hashing fresh bytes for a lookup: ~300 CPU
            # instructions each), then the proxy's caches (`lookups.py`)
            conn = req.conn
            try:
                path, target = (conn.last_split if req.target == conn.last_target
                                else self._target_of(conn, req.target))
                host = (conn.last_route_host if req.host == conn.last_host
                        else self._host_of(conn, req))
            except BadTarget as exc:
                self._bad(req, "target", str(exc))
                return
            if not table.model_routes or not (need := table.needs_model(path, host,
                                                                         req.headers)):
                self._route(req, table, path, target, host, None, None, None)
                return
            if isinstance(need, RoutePlan):  # (decided without the body: its version first)
                self._version_first(req, table, need, path, target, host)
            else:  # (a route may match by the body's `model`: it is read)
                self._read_model(req, table, path, target, host, None)
        except BadHeader as exc:
            self._bad(req, exc.reason, str(exc))

    # ------------------------------------------------------------------ decisions

    def _route(self, req: Request, table: RouteTable, path: str, target: bytes, host: str,
               prefix: bytes | None, field: ModelField | None, model: str | None,
               complete: bool = False) -> None:
        last = self._last
        plan: RoutePlan | None
        if model is None and table is last.table and self._matched is not None:
            # routes that match by path and Host alone: the same few pairs, again and again;
            # the last pair by `is` (a connection's path and Host are the same objects
            # request after request: no key built and hashed, ~250 CPU instructions)
            if path is last.path and host is last.host:
                plan = last.plan
            else:
                key = (path, host)
                try:
                    plan = self._matched[key]
                except KeyError:
                    plan = table.match(path, host, req.headers, None)
                    if plan is not None:
                        self._remember(key, plan)
                last.path, last.host, last.plan = path, host, plan
        else:
            if table is not last.table:  # (a new table: nothing of the last one's matches)
                last.table, last.path = table, None
                self._matched = None if any(p.headers for p in table.routes) else {}
            plan = table.match(path, host, req.headers, model)
        if plan is None:
            if req.method in (b"GET", b"HEAD") and not prefix and table.model_routes \
                    and (listing := model_listing(table, path, host, req.headers)) is not None:
                self._listing(req, listing)
                return
            # (prefix: the body was read because some route matches by `model`; without
            # it "no route matches POST /v1/chat/completions" read as wrong on a path
            # that a moment before served another model)
            method = req.method.decode("latin-1")
            said = ("" if prefix is None else f" with model {model[:128]!r}"
                    if model is not None else without_model(method, path) if not prefix
                    else f" with no 'model' field in the "
                    f"{body_kind(req.headers.get('content-type'), prefix)}")
            self._error(req, 404, "no_route", f"no route matches {method} {path}{said}")
            return
        req.rec.stable = plan.stable
        choice = plan.fixed  # (one version takes all traffic; no pins, no sticky keys)
        counted = True  # (toward the canary's verdict)
        if choice is None:
            pin = req.headers.get("x-killgate-pin") if plan.allow_pin else None
            if pin is not None and pin not in plan.targets:
                self._error(req, 400, "unknown_version",
                            f"x-killgate-pin names no version of route {plan.name!r}", plan)
                return
            sticky = req.headers.get(plan.sticky_header) if plan.sticky_header else None
            choice = plan.choose(sticky, pin, _rand)
            if sticky is not None and (limit := plan.key_limit) is not None:
                # one key's share of the verdict is bounded (analysis.max_per_key)
                counted = self._counted(req, plan.name, sticky, limit)
        if req.span is not None:
            trace_choice(req.span, plan, choice, model, path)
        if choice.target is None:
            self.unavailable(req, plan, choice.decision)
            return
        if field is not None and field.form and choice.target.model:
            self._bad(req, "model_body", FORM_NOT_REWRITTEN)
            return
        if prefix is None and req.body_done:
            chunks = req.chunks  # (`req.body()`, inline for a body that came in one piece)
            prefix = chunks[0] if len(chunks) == 1 else req.body()
            complete = True
        # a failover drill's request (signed token) may miss one version
        faulted = (self.faults.version(req.headers, table.doc, plan.name) if table.doc.drills
                   else None)
        flight = self._spare  # (free: only this name, the attribute and the argument hold
        if getrefcount(flight) != _FREE_FLIGHT:  # it; a task, a kill, the in-flight set,
            flight = Flight()  # a frame still running it, or `_ADMITTED`'s holders add more)
        flight.start(self, req, plan, choice.target, choice.decision, prefix, complete,
                     field, target, path, faulted, counted)  # (`req.flight` is it)

    def _listing(self, req: Request, listing: Listing) -> None:
        """`GET <path>/models[/<name>]` (modellist.py): the listing, or why not. Never a
        route's fallback: a fallback answers a model's requests, not whether it exists."""
        plan = listing.plan
        if plan is None:
            self._reply(req, 200, listing.body or b"", None, None, "")
        elif plan.killed == STATE_UNKNOWN:
            self._error(req, 503, "state_unknown", "this gateway has not loaded the kill "
                        "state yet, so it cannot tell which models are killed; retry shortly",
                        extra=b"retry-after: 1\r\n")
        else:
            self._error(req, 503, "killed", f"model {plan.model!r} is disabled (route "
                        f"{plan.name!r} killed)", scope=plan.killed or "version")

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_FREE_FLIGHT = Proxy._free_refs = _free_refs()
