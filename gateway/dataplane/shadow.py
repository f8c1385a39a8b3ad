"""Shadow traffic: a sampled copy of a request goes to the route's shadow, and its answer is
compared with the one the client got (CONTRACT §5.5).

Owns the copies of this process: sampling, the size bounds, `max_inflight` (a copy over it
is dropped and counted, never queued), sending through a connection pool of its own with
the shadow's own timeouts (`x-killgate-shadow: 1` on every copy), the noise floor's second
copy to the primary's version, assembling answers (bounded), comparing them
(`gateway.domain.compare`) and recording the outcome in each route's `Tally`.
A copy starts only once the client's answer is complete: the primary never waits on it,
and nothing of the shadow's answer can reach the client. The data plane calls `tap()`
(a few lines in proxy/flight); errors here are counted, never raised into a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Iterable

from gateway.config_shadow import ShadowConfig
from gateway.dataplane.jsonpeek import ModelField, rewrite_model
from gateway.dataplane.requesthead import request_head
from gateway.dataplane.upstream import Upstreams
from gateway.domain.comparison import Answer
from gateway.domain.routing import RoutePlan, Target
from gateway.domain.shadowstats import Tally
from gateway.domain.verdict import spec_of, verdict
from gateway.errors import (
    UpstreamClosed,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.log import event

__all__ = ["Mirror", "Tap"]

log = logging.getLogger("killgate.shadow")
SHADOW_HEADER = b"x-killgate-shadow: 1\r\n"
#: comparisons of more bytes than this (request and answers) run in a worker thread
INLINE_BYTES = 64 * 1024


class _TooLarge(Exception):
    pass


def _media_type(raw: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in raw:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower().decode("latin-1")
    return ""


class Tap:
    """One sampled request whose answer is on its way to the client: collects that answer
    (bounded), then hands the copy to the mirror. It holds one of the route's
    `max_inflight` slots from the start (a streamed answer being assembled counts, so memory
    stays below max_inflight x max_answer_bytes); the copy keeps it, else it is given back
    when the answer is refused, or when the tap is dropped unfinished (a failed stream, a
    client gone)."""

    __slots__ = ("body", "chunks", "client", "field", "lease", "method", "mirror", "plan",
                 "raw_headers", "raw_target", "served", "size", "started")

    def __init__(self, mirror: Mirror, plan: RoutePlan, served: Target, method: bytes,
                 raw_target: bytes, raw_headers: list[tuple[bytes, bytes]], body: bytes,
                 field: ModelField | None, client: bytes, started: float, lease: int) -> None:
        self.mirror, self.plan, self.served = mirror, plan, served
        self.method, self.raw_target, self.raw_headers = method, raw_target, raw_headers
        self.body, self.field, self.client, self.started = body, field, client, started
        self.chunks: list[bytes] | None = []
        self.size = 0
        self.lease = lease  # 0 once handed to the copy or given back

    def __del__(self) -> None:
        # never finished (a failed stream, a client gone): the slot goes back now; if a
        # reference cycle delays this, the lease still ends with the route's total timeout
        lease = getattr(self, "lease", 0)  # (unset if __init__ failed)
        if lease:
            self.mirror.release(self.plan.name, lease)

    def feed(self, data: bytes) -> None:
        """A piece of a streamed answer (as the backend sent it)."""
        chunks = self.chunks
        if chunks is None:
            return
        self.size += len(data)
        assert self.plan.config.shadow is not None
        if self.size > self.plan.config.shadow.max_answer_bytes:
            self.chunks = None  # too large to compare: no copy
            return
        chunks.append(data)

    def end(self, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        """A streamed answer reached its clean end."""
        if self.chunks is None:
            self._refuse()
            return
        self.answer(status, raw_headers, b"".join(self.chunks))

    def answer(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The client's whole answer (its status, fields and body)."""
        sh = self.plan.config.shadow
        assert sh is not None
        lease = self.lease
        if not lease:
            return
        if len(body) > sh.max_answer_bytes:
            self._refuse()
            return
        mirror = self.mirror
        shadow = self.plan.shadow
        if shadow is not None and mirror.killed(self.plan, shadow.name):
            # the shadow version (or the route) was killed while the primary answered: no
            # copy reaches it, as no tap is made after the kill ("down")
            self.chunks = None
            mirror.release(self.plan.name, lease)
            self.lease = 0
            mirror.count(self.plan, "down")
            return
        self.chunks = None
        self.lease = 0  # the copy has the slot now
        mirror.launch(self, lease, Answer(status, body, _media_type(raw_headers)),
                      mirror.loop.time() - self.started)

    def _refuse(self) -> None:
        self.chunks = None
        if self.lease:
            self.mirror.release(self.plan.name, self.lease)
            self.lease = 0
        self.mirror.count(self.plan, "answer")


class Mirror:
    """Every shadow copy of this process (one per process, closed on shutdown)."""

    def __init__(self, max_pending: int = 0) -> None:
        self.upstreams = Upstreams(1024, max_pending)  # the copies' own pools
        self.loop = asyncio.get_running_loop()
        self.rand = random.random
        # route -> lease -> when it ends at the latest (loop clock): a tap's or a copy's slot
        self.leases: dict[str, dict[int, float]] = {}
        self._next_lease = itertools.count(1).__next__
        self.tallies: dict[str, Tally] = {}
        self._specs: dict[int, tuple[ShadowConfig, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: the proxy's `killed_since` (the data plane's wiring sets it): a copy is not sent
        #: to a version or route killed after its request was routed
        self.killed_since: Callable[[RoutePlan, str], object] = lambda plan, version: None

    def killed(self, plan: RoutePlan, version: str) -> bool:
        """Whether the route, or `version` of it, was killed after `plan` routed the request
        (a copy must not reach it, as no tap is made after the kill)."""
        return self.killed_since(plan, version) is not None

    # ------------------------------------------------------------------ the data plane's

    def tap(self, plan: RoutePlan, served: Target, method: bytes, raw_target: bytes,
            raw_headers: list[tuple[bytes, bytes]], body: bytes | None, complete: bool,
            field: ModelField | None, client: bytes, started: float) -> Tap | None:
        """A tap for this request's answer when it is sampled for a copy; else None.
        `body`: the request body, when `complete` (all of it is in memory)."""
        sh = plan.config.shadow
        if sh is None or self.rand() >= sh.sample:
            return None
        if plan.shadow is None:
            if plan.shadow_off in ("killed", "unhealthy"):
                self.count(plan, "down")
            return None
        if not complete or body is None or len(body) > sh.max_request_bytes:
            self.count(plan, "body")
            return None
        leases = self.leases.get(plan.name)
        if leases is None:
            leases = self.leases[plan.name] = {}
        now = self.loop.time()
        if len(leases) >= sh.max_inflight and not _prune(leases, now):
            self.count(plan, "dropped")  # dropped, never queued: the shadow is behind
            return None
        lease = self._next_lease()
        leases[lease] = now + plan.config.timeouts.total + 1.0  # the answer's longest
        return Tap(self, plan, served, method, raw_target, raw_headers, body, field, client,
                   started, lease)

    # ------------------------------------------------------------------ counting

    def tally(self, plan: RoutePlan) -> Tally:
        rc = plan.config
        sh = rc.shadow
        assert sh is not None
        known = self._specs.get(id(rc))
        if known is None or known[0] is not sh:
            known = self._specs[id(rc)] = (sh, spec_of(sh, rc.protocol))
            if len(self._specs) > 1024:  # configs come and go with reloads
                self._specs = {id(rc): known}
        spec = known[1]
        t = self.tallies.get(rc.name)
        if t is None or t.spec != spec:
            t = self.tallies[rc.name] = Tally(sh.version, spec, keep=sh.disagreements.keep)
        t.keep = sh.disagreements.keep
        return t

    def count(self, plan: RoutePlan, result: str) -> None:
        self.tally(plan).copy(result)

    # ------------------------------------------------------------------ copies

    @property
    def inflight(self) -> dict[str, int]:
        """Route -> slots held (taps assembling an answer, copies under way)."""
        now = self.loop.time()
        out = {}
        for route, leases in self.leases.items():
            _prune(leases, now)
            out[route] = len(leases)
        return out

    def release(self, route: str, lease: int) -> None:
        leases = self.leases.get(route)
        if leases is not None:
            leases.pop(lease, None)

    def launch(self, tap: Tap, lease: int, primary: Answer, primary_s: float) -> None:
        """Send the copy of a tapped request (with the tap's slot, `lease`)."""
        sh = tap.plan.config.shadow
        assert sh is not None
        leases = self.leases.get(tap.plan.name)
        if leases is not None and lease in leases:  # the copy's own longest
            leases[lease] = self.loop.time() + 2 * sh.timeouts.total + 1.0
        task = self.loop.create_task(self._copy(tap, lease, sh, primary, primary_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, tap: Tap, lease: int, sh: ShadowConfig, primary: Answer,
                    primary_s: float) -> None:
        plan = tap.plan
        shadow = plan.shadow
        try:
            if shadow is None:
                return
            tally = self.tally(plan)
            tally.copy("sent")
            second: tuple[Answer, float] | BaseException | None = None
            if sh.noise is not None and self.rand() < sh.noise.sample \
                    and not self.killed(plan, tap.served.name):  # (the primary's version)
                first, second = await asyncio.gather(  # the primary's own second answer
                    self._send(tap, shadow, sh), self._send(tap, tap.served, sh),
                    return_exceptions=True)
            else:
                try:
                    first = await self._send(tap, shadow, sh)
                except (UpstreamError, _TooLarge) as exc:
                    first = exc
            if isinstance(first, BaseException):
                if isinstance(first, asyncio.CancelledError):
                    raise first
                tally.failed(_failure(first))
                return
            answer, shadow_s = first
            again = second[0] if isinstance(second, tuple) else None
            work = (sh, plan.config.protocol, tap.body, primary, answer, again,
                    tally.noisy_paths(sh.noise))
            size = len(tap.body) + len(primary.body) + len(answer.body) + \
                (len(again.body) if again is not None else 0)
            # a large comparison runs beside the loop (it gets the GIL back every few ms);
            # a small one costs less than the hand-off
            v = verdict(*work) if size <= INLINE_BYTES else \
                await self.loop.run_in_executor(None, verdict, *work)
            if v.noise is not None:
                tally.noise(v.noise)
            if sh.noise is not None:
                tally.observed(v.result)
            tally.outcome(v.outcome, v.left, primary_s, shadow_s, v.result.detail)
            if v.record is not None:
                tally.disagreement(v.record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a side channel: counted and logged, never raised
            self.tally(plan).failed("error")
            event(log, "shadow_copy_failed", logging.WARNING, route=plan.name,
                  error=f"{type(exc).__name__}: {exc}")
        finally:
            self.release(plan.name, lease)

    async def _send(self, tap: Tap, target: Target, sh: ShadowConfig) -> tuple[Answer, float]:
        """One copy to `target`; its assembled answer and how long it took."""
        body = tap.body
        if tap.field is not None and target.model:
            body = rewrite_model(body, tap.field, target.model)
        t = sh.timeouts
        loop = self.loop
        started = loop.time()
        pool = self.upstreams.pools.get(target.origin) or self.upstreams.pool(target.origin)
        ex, _ = await pool.acquire(t.connect)
        try:
            ex.begin(started + t.total, t.idle, tap.method == b"HEAD")
            first = b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (tap.method, target.path_bytes,
                                                           tap.raw_target, pool.host_header)
            extra = b"x-forwarded-for: %s\r\n%s" % (tap.client, SHADOW_HEADER)
            await ex.send(request_head(first, tap.raw_headers, extra, len(body)), body)
            await ex.read_head()
            parts: list[bytes] = []
            size = 0
            while data := await ex.read():
                size += len(data)
                if size > sh.max_answer_bytes:
                    raise _TooLarge()
                parts.append(data)
            answer = Answer(ex.status, b"".join(parts), _media_type(ex.headers))
        except BaseException:
            ex.close()
            ex.release()
            raise
        ex.release()
        return answer, loop.time() - started

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Cancel the copies in flight (they are not the client's) and close the pools."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstreams.close()


def _prune(leases: dict[int, float], now: float) -> int:
    """Drop the leases past their end (a tap lost without giving its slot back); how many."""
    gone = [k for k, end in leases.items() if end <= now]
    for k in gone:
        del leases[k]
    return len(gone)


def _failure(exc: BaseException) -> str:
    """The `kind` of a copy that got no answer (a fixed set: a metric label)."""
    if isinstance(exc, _TooLarge):
        return "answer_too_large"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamOverflow):
        return "overflow"
    if isinstance(exc, UpstreamError) and not exc.delivered:
        return "connect"
    if isinstance(exc, UpstreamClosed):
        return "reset"
    if isinstance(exc, UpstreamProtocolError):
        return "malformed"
    return "error"
