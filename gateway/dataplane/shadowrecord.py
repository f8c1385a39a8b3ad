"""The shadow's counts in this process: one `Tally` per route, and the comparison of a copy's
answer with the client's (`gateway.domain.verdict`) recorded in it (CONTRACT §5.5).

Owns which tally a route's counts go to (a new one when the shadow's version or comparison
settings change) and where a comparison runs: inline when small, beside the loop in a
worker thread when large. No I/O; what is counted is the domain's (domain/shadowstats.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from gateway.config import Config, RouteConfig
from gateway.config_shadow import ShadowConfig
from gateway.domain.comparison import Answer, model_answered
from gateway.domain.disagreements import record_text
from gateway.domain.routing import RoutePlan
from gateway.domain.shadowstats import Tally
from gateway.domain.verdict import Verdict, spec_for, verdict

__all__ = ["INLINE_BYTES", "ShadowCounts", "compare", "routes_by_name"]

#: comparisons of more bytes than this (request and answers) run in a worker thread: their
#: cost follows the number of JSON values and the paths configured, not the bytes (up to
#: ~2 µs a byte with a few redact paths, far more with many), and the hand-off costs ~20 µs
INLINE_BYTES = 1024


def routes_by_name(config: Callable[[], Config]) -> Callable[[str], RouteConfig | None]:
    """The route of that name in the config in force (`config()`), from an index made once
    per config: `Config.route` scans every route's model, and the counts ask for it twice
    per copy and once per route at every /metrics scrape (~40 ns a route: with a thousand
    routes, ~80 µs of the loop per sampled request and O(routes²) per scrape)."""
    index: tuple[Config | None, dict[str, RouteConfig]] = (None, {})

    def current(route: str) -> RouteConfig | None:
        nonlocal index
        cfg = config()
        if index[0] is not cfg:
            names: dict[str, RouteConfig] = {}
            for rc in cfg.routes:
                names.setdefault(rc.name, rc)  # (the first, as Config.route finds it)
            index = (cfg, names)
        return index[1].get(route)

    return current


class ShadowCounts:
    """Every route's shadow tally of this process (what /metrics and the fleet's report
    read), kept by the mirror."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}
        self._specs: dict[int, tuple[ShadowConfig, str]] = {}
        #: the route's config in force now (the wiring sets it; None: not known): a copy of
        #: a request routed before a reload that changed the settings counts nowhere
        self.current: Callable[[str], RouteConfig | None] = lambda route: None

    def _spec(self, rc: RouteConfig, sh: ShadowConfig) -> str:
        known = self._specs.get(id(rc))
        if known is None or known[0] is not sh:
            known = self._specs[id(rc)] = (sh, spec_for(rc))
            if len(self._specs) > 1024:  # configs come and go with reloads
                self._specs = {id(rc): known}
        return known[1]

    def tally(self, plan: RoutePlan) -> Tally:
        """The route's tally for its shadow's current version and comparison settings."""
        rc = plan.config
        sh = rc.shadow
        assert sh is not None
        spec = self._spec(rc, sh)
        t = self.tallies.get(rc.name)
        if t is None or t.spec != spec:
            now = self.current(rc.name)
            if t is not None and now is not None and now is not rc and \
                    (now.shadow is None or self._spec(now, now.shadow) != spec):
                # settings a reload has replaced: counted apart, never over the new ones
                return Tally(sh.version, spec, keep=0)
            t = self.tallies[rc.name] = Tally(sh.version, spec, keep=sh.disagreements.keep)
        now = self.current(rc.name)  # (the records are kept as the config in force says)
        t.keep_for(now.shadow.disagreements if now is not None and now.shadow is not None
                   else sh.disagreements)
        return t

    def live(self) -> dict[str, Tally]:
        """The tallies of the shadows in force now, of their version and comparison settings
        (/metrics: a shadow, or a route, a reload removed, or counts of settings it replaced,
        keep no series frozen at their last values; the next copy starts them afresh)."""
        out = {}
        for route, t in self.tallies.items():
            rc = self.current(route)
            if rc is not None and rc.shadow is not None and rc.shadow.version == t.version \
                    and self._spec(rc, rc.shadow) == t.spec:
                out[route] = t
        return out

    def count(self, plan: RoutePlan, result: str) -> None:
        """One more copy of the route's counted as `result` (sent, dropped, down, ...)."""
        self.tally(plan).copy(result)


async def compare(loop: asyncio.AbstractEventLoop, tally: Tally, sh: ShadowConfig,
                  plan: RoutePlan, body: bytes, primary: Answer, primary_s: float,
                  answer: Answer, shadow_s: float, again: Answer | None,
                  executor: Executor | None = None) -> None:
    """Compare the copy's `answer` with the client's (`primary`; `again`: the primary
    version's second answer, for the noise floor) and record the outcome in `tally`.
    `executor`: where large comparisons run (the mirror's own thread, never the loop's
    default executor, which the state store, snapshots and key fetches wait on)."""
    work = (sh, plan.config.protocol, body, primary, answer, again,
            tally.noisy_paths(sh.noise))
    size = len(body) + len(primary.body) + len(answer.body) + \
        (len(again.body) if again is not None else 0)
    # a large comparison runs beside the loop (it gets the GIL back every few ms);
    # a small one, or one of identical bodies (no parse, no record), costs less than the
    # hand-off (a compressed answer is not small: it is decoded first, to up to
    # max_answer_bytes)
    encoded = primary.encoding or answer.encoding or (again is not None and again.encoding)
    same = primary.status == answer.status and primary.body == answer.body and \
        (again is None or again.body == primary.body)
    v, text = _judged(*work) if (size <= INLINE_BYTES or same) and not encoded else \
        await loop.run_in_executor(executor, _judged, *work)
    if v.noise is not None:
        tally.noise(v.noise)
    if sh.noise is not None:
        tally.observed(v.result)
    tally.outcome(v.outcome, v.left, primary_s, shadow_s, v.result.detail,
                  model_answered(primary, plan.config.protocol), v.excused_answer)
    if text is not None:
        tally.disagreement(text, sh.disagreements)


def _judged(*work: Any) -> tuple[Verdict, str | None]:
    """The verdict, and its disagreement's stored text (made here, beside the loop when the
    comparison is large: the record holds the request and both answers)."""
    v = verdict(*work)
    return v, None if v.record is None else record_text(v.record)
