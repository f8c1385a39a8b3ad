"""Shadow traffic: a sampled copy of a request goes to the route's shadow, and its answer is
compared with the one the client got (CONTRACT §5.5).

Owns the copies of this process: sampling, the size bounds, `max_inflight` (a copy over it
is dropped and counted, never queued: the route's slots), and each copy's course: sent
(shadowsend.py, with the noise floor's second copy to the primary's version) unless its
version was killed since, compared and recorded (shadowrecord.py). A copy starts only once
the client's answer is complete (shadowtap.py): the primary never waits on it, and nothing
of the shadow's answer can reach the client. The data plane calls `tap()` (a few lines in
proxy/flight); errors here are counted, never raised into a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gateway.config import RouteConfig
from gateway.config_shadow import ShadowConfig
from gateway.dataplane.headerview import BadHeader, HeaderView
from gateway.dataplane.heldmodel import held_model
from gateway.dataplane.inflight import Handle
from gateway.dataplane.jsonpeek import ModelField, Unreadable
from gateway.dataplane.shadowrecord import ShadowCounts, compare
from gateway.dataplane.shadowsend import KilledSince, Stopped, TooLarge, failure, send
from gateway.dataplane.shadowtap import Tap
from gateway.dataplane.upstream import Upstreams
from gateway.domain.comparison import Answer, model_answered
from gateway.domain.routing import RoutePlan, Target
from gateway.errors import UpstreamError
from gateway.log import event

__all__ = ["Mirror"]

log = logging.getLogger("killgate.shadow")


def _same_deployment(rc: RouteConfig, target: Target) -> bool:
    """Whether `rc` still declares `target`'s version as it was (url, model, artifact)."""
    v = next((v for v in rc.versions if v.name == target.name), None)
    return v is not None and v.url == target.url and v.model == target.model and \
        v.artifact == target.artifact


class Mirror:
    """Every shadow copy of this process (one per process, closed on shutdown)."""

    def __init__(self, max_pending: int = 0, idle_timeout: float = 4.0) -> None:
        # the copies' own pools (`idle_timeout`: server.backend_idle_timeout)
        self.upstreams = Upstreams(1024, max_pending, idle_timeout=idle_timeout)
        self.loop = asyncio.get_running_loop()
        # large comparisons run here, one at a time (they hold the GIL: more threads would
        # not compare faster), never in the loop's default executor: the local state
        # store's commits, snapshots of the kill state and JWKS fetches wait in that one,
        # and a busy shadow must not queue a kill behind its comparisons
        self.compare_pool = ThreadPoolExecutor(1, thread_name_prefix="killgate-shadow-compare")
        self.rand = random.random
        # route -> lease -> when it ends at the latest (loop clock): a tap's or a copy's slot
        self.leases: dict[str, dict[int, float]] = {}
        # route -> no lease of it ends before this (loop clock): a route at max_inflight is
        # not looked through, slot by slot, for each request it drops
        self._due: dict[str, float] = {}
        self._next_lease = itertools.count(1).__next__
        self.counts = ShadowCounts()
        self.tallies = self.counts.tallies  # (the same dict, never replaced: what is read)
        self._tasks: set[asyncio.Task[None]] = set()
        #: the proxy's `killed_since` (the data plane's wiring sets it): a copy is not sent
        #: to a version or route killed after its request was routed
        self.killed_since: KilledSince = lambda plan, version: None
        #: the process's in-flight handles (the wiring sets `Inflight.handles`): a copy under
        #: way is in it, so a kill with abort_inflight cuts it as it cuts a request
        self.handles: set[Handle] = set()
        #: the route's config in force now (the wiring sets it; None: not known): a reload
        #: that stopped the copies stops those of requests routed before it too
        self.route_now: Callable[[str], RouteConfig | None] | None = None

    def killed(self, plan: RoutePlan, version: str) -> bool:
        """Whether the route, or `version` of it, was killed after `plan` routed the request
        (a copy must not reach it, as no tap is made after the kill)."""
        return self.killed_since(plan, version) is not None

    def stopped(self, plan: RoutePlan) -> bool:
        """Whether the config in force no longer mirrors `plan`'s requests to its shadow:
        a reload since the request was routed removed the route or its shadow, named
        another version, or set `sample` to 0 (an operator stopping the copies means the
        requests still being answered too); or moved the shadow version (another url, model
        or artifact): such a copy went to a deployment the operator moved away from,
        opened the copies' pool to an origin the reload had retired again, and was
        counted nowhere (its counts' settings replaced); or added to `drop_headers` (a
        copy made before carries a field the operator now keeps from the shadow)."""
        if self.route_now is None or plan.shadow is None:
            return False
        now = self.route_now(plan.name)
        if now is plan.config:
            return False
        sh = now.shadow if now is not None else None
        was = plan.config.shadow
        return now is None or sh is None or sh.sample <= 0 or \
            not _same_deployment(now, plan.shadow) or \
            (was is not None and not set(sh.drop_headers) <= set(was.drop_headers))

    def noise_kept(self, plan: RoutePlan, served: Target) -> bool:
        """Whether the config in force still has the noise floor of `plan`'s shadow, and
        `served` (the version that answered) where it was: its second request to that
        version is not sent once a reload removed the noise floor (a primary that must not
        get a request twice) or moved the version (its old deployment, whose pool the
        reload retired)."""
        if self.route_now is None:
            return True
        now = self.route_now(plan.name)
        if now is plan.config:
            return True
        return now is not None and now.shadow is not None and \
            now.shadow.noise is not None and _same_deployment(now, served)

    # ------------------------------------------------------------------ the data plane's

    def tap(self, plan: RoutePlan, served: Target, method: bytes, raw_target: bytes,
            raw_headers: list[tuple[bytes, bytes]], body: bytes | None, complete: bool,
            field: ModelField | None, client: bytes, started: float,
            window: int = 1 << 20, span: object = None,
            traceparent: bytes | None = None) -> Tap | None:
        """A tap for this request's answer when it is sampled for a copy; else None.
        `body`: the request body, when `complete` (all of it is in memory); `client`: the
        x-forwarded-* lines the request carried to its backend (the copy carries them);
        `window`: server.model_peek_bytes (a body's `model` read for the copy is read so);
        `span`, `traceparent`: the request's trace span (traced) and the client's first
        traceparent, of which the copy's own is made (shadowsend.py)."""
        sh = plan.config.shadow
        if sh is None or self.rand() >= sh.sample:
            return None
        if plan.shadow is None:
            if plan.shadow_off in ("killed", "unhealthy"):
                self.count(plan, "down")
            return None
        if served.name != plan.stable:
            # compared only with the stable's answer: a canary's, a pinned or a failed-over
            # version's would measure the shadow against a mix of models (counted apart)
            self.count(plan, "not_compared")
            return None
        if self.stopped(plan):
            return None
        if not complete or body is None or len(body) > sh.max_request_bytes:
            self.count(plan, "body")
            return None
        if (field is None or field.form) and plan.shadow.model:  # (a form's: refused)
            # (sent to a version that rewrites nothing, the body was not read for its
            # `model`: read here, for the copy only; one that cannot be is not copied, and
            # never makes the client's request refused)
            try:
                field = held_model(HeaderView(raw_headers), body, True, window)
            except (Unreadable, BadHeader):
                self.count(plan, "body")
                return None
        leases = self.leases.get(plan.name)
        if leases is None:
            leases = self.leases[plan.name] = {}
        now = self.loop.time()
        if len(leases) >= sh.max_inflight and not self._prune(plan.name, leases, now):
            self.count(plan, "dropped")  # dropped, never queued: the shadow is behind
            return None
        lease = self._next_lease()
        end = leases[lease] = now + plan.config.timeouts.total + 1.0  # the answer's longest
        if end < self._due.get(plan.name, end):
            self._due[plan.name] = end
        tap = Tap(self, plan, served, method, raw_target, raw_headers, body, field, client,
                  started, lease)
        tap.span, tap.traceparent = span, traceparent
        return tap

    # ------------------------------------------------------------------ counting

    def count(self, plan: RoutePlan, result: str) -> None:
        """One more copy of the route's counted as `result` (shadowrecord.py keeps them)."""
        self.counts.count(plan, result)

    # ------------------------------------------------------------------ copies

    @property
    def inflight(self) -> dict[str, int]:
        """Route -> slots held (taps assembling an answer, copies under way)."""
        now = self.loop.time()
        out = {}
        for route, leases in self.leases.items():
            self._prune(route, leases, now)
            out[route] = len(leases)
        return out

    def _prune(self, route: str, leases: dict[int, float], now: float) -> int:
        """Drop the route's leases past their end (a tap lost without giving its slot
        back); how many. Looked through only once one may have ended."""
        if now < self._due.get(route, -math.inf):
            return 0
        gone = [k for k, end in leases.items() if end <= now]
        for k in gone:
            del leases[k]
        self._due[route] = min(leases.values(), default=math.inf)
        return len(gone)

    def release(self, route: str, lease: int) -> None:
        leases = self.leases.get(route)
        if leases is not None:
            leases.pop(lease, None)

    def launch(self, tap: Tap, lease: int, primary: Answer, primary_s: float) -> None:
        """Send the copy of a tapped request (with the tap's slot, `lease`)."""
        sh = tap.plan.config.shadow
        assert sh is not None
        leases = self.leases.get(tap.plan.name)
        if leases is not None and lease in leases:
            # held until the copy is done (its `finally` gives it back), never ended by the
            # clock: a copy waiting for the comparison thread still holds its bodies, and a
            # slot ended early would let a backlog build behind it
            leases[lease] = math.inf
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
            if self.stopped(plan):  # (a reload since its answer was tapped)
                return
            tally = self.counts.tally(plan)
            tally.copy("sent")
            second: tuple[Answer, float] | BaseException | None = None
            if sh.noise is not None and self.rand() < sh.noise.sample \
                    and not self.killed(plan, tap.served.name) \
                    and self.noise_kept(plan, tap.served):  # (the primary's version, sent again)
                first, second = await asyncio.gather(  # the primary's own second answer
                    send(self.upstreams, self.loop, tap, shadow, sh, self.handles,
                         self.killed_since, lambda: self.stopped(plan)),
                    send(self.upstreams, self.loop, tap, tap.served, sh, self.handles,
                         self.killed_since, lambda: not self.noise_kept(plan, tap.served)),
                    return_exceptions=True)
            else:
                try:
                    first = await send(self.upstreams, self.loop, tap, shadow, sh, self.handles,
                                       self.killed_since, lambda: self.stopped(plan))
                except (UpstreamError, TooLarge, Stopped) as exc:
                    first = exc
            if isinstance(first, BaseException):
                if isinstance(first, asyncio.CancelledError):
                    raise first
                tally.failed(failure(first), model_answered(primary, plan.config.protocol))
                return
            answer, shadow_s = first
            again = second[0] if isinstance(second, tuple) else None
            await compare(self.loop, tally, sh, plan, tap.body, primary, primary_s, answer,
                          shadow_s, again, self.compare_pool)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a side channel: counted and logged, never raised
            self.counts.tally(plan).failed("error")
            event(log, "shadow_copy_failed", logging.WARNING, route=plan.name,
                  error=f"{type(exc).__name__}: {exc}")
        finally:
            self.release(plan.name, lease)

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Cancel the copies in flight (they are not the client's) and close the pools."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.compare_pool.shutdown(wait=False, cancel_futures=True)
        await self.upstreams.close()
