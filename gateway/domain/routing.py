"""A route's version choice: the pure decision core of the data plane.

Owns `RoutePlan` (one route's precomputed choice: weights, the versions that can serve,
failover orders; built from config + replicated state + health by domain/tablebuild.py),
the decisions, and `Target` (re-exported from domain/target.py). No I/O, no aiohttp, no
redis: randomness and the sticky key are passed in. The routes together:
domain/routetable.py; sticky scores: domain/bucketing.py.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate
from typing import NamedTuple

from gateway.config import FallbackConfig, RouteConfig
from gateway.config_routes import case_fold
from gateway.domain.bucketing import bucket_score
from gateway.domain.target import Target, make_target

__all__ = [
    "STATE_UNKNOWN",
    "Choice",
    "RoutePlan",
    "Target",
    "path_matches",
]

# Decisions, as they appear in x-killgate-decision.
WEIGHTED, STICKY, PINNED, FAILOVER, FALLBACK, KILLED = (
    "weighted", "sticky", "pinned", "failover", "fallback", "killed")
#: `RoutePlan.killed` while this instance has not loaded the kill state once: every route
#: is closed like a kill (its fallback, else 503 `state_unknown`), never routed on an
#: empty state document (that would silently lift every kill the fleet holds)
STATE_UNKNOWN = "state_unknown"


def path_matches(prefix: str, path: str) -> bool:
    """Segment-aware prefix: /v2/models/iris matches /v2/models/iris/infer, not /iris2."""
    if not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or prefix.endswith("/") or path[len(prefix)] == "/"


class Choice(NamedTuple):
    target: Target | None
    decision: str


class RoutePlan:
    """Everything needed to route one request on one route, precomputed."""

    __slots__ = ("_all_cum", "_all_names", "_all_total", "_elig_cum", "_elig_names",
                 "_elig_total", "_elig_w", "_eligible", "_failover", "_heir", "_inputs", "_only",
                 "_pinnable", "_prior", "_servable", "_spare", "allow_pin", "aware", "config",
                 "excluded", "fallback", "fallback_body",
                 "fixed", "fold_case", "headers", "host", "idle_timeout", "key_limit", "killed",
                 "match_keys", "model", "name", "override_unservable", "prefix", "previous",
                 "retry", "rolled_off", "shadow",
                 "shadow_config", "shadow_off", "stable", "sticky_header", "targets",
                 "total_timeout", "weights")

    def __init__(self, rc: RouteConfig, weights: Mapping[str, float], stable: str,
                 excluded: Mapping[str, str], killed: str | None,
                 previous: str | None = None, unpinnable: frozenset[str] = frozenset(),
                 like: RoutePlan | None = None, unservable: tuple[str, ...] = (),
                 rolled_off: frozenset[str] = frozenset()) -> None:
        """`like`: a plan of the same route config (object), whose config-only parts
        (everything up to `targets`) are taken as they are instead of being built again.
        `unservable`: the versions a latched override serves that this config lacks (it
        sets every version here to 0): none serves (domain/tablebuild.py). `rolled_off`:
        the versions a latched rollback took to weight 0: never a spare (below)."""
        self.config = rc
        self._inputs: tuple[object, ...] | None = None  # (tablebuild._made's memo: what
        self._prior: RoutePlan | None = None  # it was made of, the plan it replaced)
        same = like if like is not None and like.config is rc else None
        # The config-only parts: built, or taken from a plan of this very config object
        # (frozen; a reload makes new ones) as a kill's swap does on every instance (18k of
        # 80k instructions, callgrind); the same list both ways (test_plan_reuse.py).
        if same is None:
            self.name = rc.name
            self.fold_case = not rc.match.case_sensitive
            prefix = rc.match.path_prefix
            self.prefix = case_fold(prefix) if prefix is not None and self.fold_case else prefix
            self.host = rc.match.host
            self.headers = tuple((rc.match.header or {}).items())
            self.model = rc.match.model
            self.match_keys = rc.match.keys()
            self.sticky_header = rc.sticky.header if rc.sticky else None
            #: (max_per_key, max_per_client, window) of a sticky route's analysis: the
            #: requests of one key, one client, counted per window (domain/keyquota.py)
            an = rc.analysis
            self.key_limit = ((an.max_per_key, an.max_per_client, an.window)
                              if self.sticky_header is not None and an is not None
                              and (an.max_per_key is not None or an.max_per_client is not None)
                              else None)
            self.allow_pin = rc.allow_pin
            # read by every request: a slot each (a config model's attribute is a slow
            # lookup: pydantic's __getattr__ keeps CPython 3.11 from specialising it)
            self.total_timeout = rc.timeouts.total
            self.idle_timeout = rc.timeouts.idle
            self.retry = rc.retry
            self.shadow_config = rc.shadow  # (the proxy asks of every answer: copies or none)
            self.aware = rc.protocol != "http"  # (and whether the answer's model is noted)
            self.fallback: FallbackConfig | None = (fb := rc.fallback)
            # serialised once here, not per request (a YAML alias tree could make it costly)
            self.fallback_body: bytes = (json.dumps(fb.json_).encode()
                                         if fb is not None and fb.json_ is not None else b"")
            self.targets: dict[str, Target] = {
                v.name: make_target(rc.name, v.name, v.url, v.model, v.artifact)
                for v in rc.versions}
        else:
            self.name = same.name
            self.fold_case = same.fold_case
            self.prefix = same.prefix
            self.host = same.host
            self.headers = same.headers
            self.model = same.model
            self.match_keys = same.match_keys
            self.sticky_header = same.sticky_header
            self.key_limit = same.key_limit
            self.allow_pin = same.allow_pin
            self.total_timeout = same.total_timeout
            self.idle_timeout = same.idle_timeout
            self.retry = same.retry
            self.shadow_config = same.shadow_config
            self.aware = same.aware
            self.fallback = same.fallback
            self.fallback_body = same.fallback_body
            self.targets = same.targets
        self.killed = killed
        self.excluded = dict(excluded)  # version -> "killed" | "unhealthy"
        w = {n: float(weights.get(n, 0.0)) for n in self.targets}
        if sum(w.values()) <= 0:
            w[stable] = 100.0
        self.weights = w
        all_names = tuple(n for n, x in w.items() if x > 0)
        self._all_names = all_names
        self._all_cum = tuple(accumulate(w[n] for n in all_names))
        self._all_total = self._all_cum[-1]
        self.override_unservable = unservable
        eligible = [] if unservable else [n for n in self.targets if n not in self.excluded]
        # The shadow (CONTRACT §5.5) never answers a client while it has no traffic of its
        # own: not weighted, pinned, sticky or failed over to. It gets copies only while it
        # can serve (`shadow`); else `shadow_off` says why not.
        self.shadow: Target | None = None
        self.shadow_off = ""
        sh = self.shadow_config
        if sh is not None and sh.version in self.targets:
            if sh.version == stable or w[sh.version] > 0:
                self.shadow_off = "serving"  # promoted: a canary (or the stable) now
            else:
                if sh.version in eligible:
                    eligible.remove(sh.version)
                    self.shadow = self.targets[sh.version]
                else:
                    self.shadow_off = self.excluded.get(sh.version, "unservable" if unservable else "")
        self._servable = frozenset(eligible)
        # a version taken to weight 0 by an override (a latched rollback, or weights) is out
        # of pins too; one at weight 0 in the file (a dark launch) stays pinnable
        self._pinnable = self._servable - unpinnable
        # the versions that may take traffic that is not theirs (an unhealthy stable's share,
        # everything when every version with traffic is out, an undelivered request): not
        # one a latched rollback took off (the version it left, after a rollback: its
        # "previous stable"), which would undo the rollback in silence when the version
        # rolled back to goes down; the fallback answers then, as when none can serve
        self._spare = spare = self._servable - rolled_off
        self.rolled_off = rolled_off
        self.stable = stable
        # (after a rollback, the history's stable before this one is the version rolled off:
        # not a known-good one, for the status and a drill's default either)
        self.previous = previous = None if previous in rolled_off else previous
        ew = {n: w[n] for n in eligible if w[n] > 0}
        #: the version the stable's share goes to while the stable cannot serve (`choose`)
        self._heir: str | None = None
        if (stable in self.excluded and previous is not None and previous != stable
                and previous in spare and w[stable] > 0):
            # The stable cannot serve: its share goes to the previous known-good version.
            ew[previous] = ew.get(previous, 0.0) + w[stable]
            self._heir = previous
        if not ew and spare:
            # Every version with traffic is out: the stable (if it can serve) takes it all,
            # else the remaining versions share equally.
            ew = {stable: 1.0} if stable in spare else {n: 1.0 for n in eligible if n in spare}
        self._eligible = frozenset(ew)
        self._elig_w = ew
        self._elig_names = tuple(ew)
        self._elig_cum = tuple(accumulate(ew.values()))
        self._elig_total = self._elig_cum[-1] if ew else 0.0
        self._failover = self._build_failover()
        # one version takes all traffic and can serve: the weighted choice needs no draw
        only = all_names[0] if len(all_names) == 1 else None
        self._only = (Choice(self.targets[only], WEIGHTED)
                      if only is not None and not killed and self._elig_names == (only,) else None)
        # ... and no request can ask for another (no pins, no sticky key): the choice of every
        # request, which the proxy takes without calling `choose`
        self.fixed = self._only if not self.allow_pin and self.sticky_header is None else None

    def effective_weights(self) -> dict[str, float]:
        """Each version's share of new traffic in percent (0 for those that cannot serve)."""
        if self.killed or not self._elig_names:
            return {n: 0.0 for n in self.targets}
        prev = 0.0
        out = {n: 0.0 for n in self.targets}
        for n, c in zip(self._elig_names, self._elig_cum, strict=True):
            out[n] = round(100.0 * (c - prev) / self._elig_total, 4)
            prev = c
        return out

    def matches(self, path: str, host: str, headers: Mapping[str, str], model: str | None) -> bool:
        if self.prefix is not None and not path_matches(
                self.prefix, case_fold(path) if self.fold_case else path):
            return False
        if self.host is not None and host != self.host:
            return False
        for k, v in self.headers:
            if headers.get(k) != v:
                return False
        return self.model is None or model == self.model

    def _rendezvous(self, names: Iterable[str], key: str, weights: Mapping[str, float]) -> str:
        best, best_score = "", math.inf
        for n in names:
            s = bucket_score(self.name, n, key, weights[n])
            if s < best_score:
                best, best_score = n, s
        return best

    def choose(self, sticky_key: str | None, pin: str | None,
               rand: Callable[[], float]) -> Choice:
        """Pick the version for one request. `pin` is only honoured when allowed."""
        if self._only is not None and pin is None and sticky_key is None:
            return self._only
        if self.killed:
            return Choice(None, KILLED)
        if not self._elig_names:
            return Choice(None, FALLBACK)
        failed_over = False
        name: str | None = None
        decision = WEIGHTED
        if pin is not None and self.allow_pin:
            if pin in self._pinnable:
                name, decision = pin, PINNED
            else:
                failed_over = True
        if name is None and sticky_key is not None:
            cand = self._rendezvous(self._all_names, sticky_key, self.weights)
            if cand in self._eligible:
                name, decision = cand, STICKY
            else:
                name = self._heir if cand == self.stable and self._heir is not None else \
                    self._rendezvous(self._elig_names, sticky_key, self._elig_w)
                failed_over = True
        if name is None:
            idx = bisect_right(self._all_cum, rand() * self._all_total)
            cand = self._all_names[min(idx, len(self._all_names) - 1)]
            if cand in self._eligible:
                name = cand
            elif cand == self.stable and self._heir is not None:
                # the stable's share, whole, to the previous known-good: drawn again over
                # every eligible version, part of it went to the others (a canary took
                # about twice its share, and more than `effective_weights` said)
                name, failed_over = self._heir, True
            else:
                idx = bisect_right(self._elig_cum, rand() * self._elig_total)
                name = self._elig_names[min(idx, len(self._elig_names) - 1)]
                failed_over = True
        return Choice(self.targets[name], FAILOVER if failed_over else decision)

    @property
    def serves(self) -> bool:
        """Whether any version of the route can take its traffic (a route kill aside)."""
        return bool(self._elig_names)

    def can_serve(self, name: str) -> bool:
        """Whether version `name` may answer clients (not killed or unhealthy, not the
        shadow, not one a latched rollback took off unless it has traffic); a route kill
        aside."""
        return name in self._eligible or name in self._spare

    def failover_for(self, name: str) -> tuple[Target, ...]:
        """Versions to try, in order, when `name` cannot be reached (precomputed)."""
        return self._failover.get(name, ())

    def _build_failover(self) -> dict[str, tuple[Target, ...]]:
        """Where an undelivered request goes next: versions with traffic, then the previous
        known-good, then the stable, then any other version that can serve (an answer from
        a healthy version beats an error for a request no backend has seen)."""
        out = {}
        for name in self.targets:
            order = [n for n in self._elig_names if n != name]
            for extra in (self.previous, self.stable, *self.targets):
                if extra is not None and extra != name and extra in self._spare \
                        and extra not in order:
                    order.append(extra)
            out[name] = tuple(self.targets[n] for n in order)
        return out
