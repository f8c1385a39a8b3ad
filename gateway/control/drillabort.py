"""A drill's abort watch: users' error rate on a route, from the gateways' own /metrics,
the drill's own requests taken out (per instance)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from gateway.domain.drillreport import Obs, is_error

__all__ = ["ErrorWatch", "own_counts", "route_counts"]


_LINE = re.compile(r'^killgate_requests_total\{([^}]*)\}\s+([0-9.eE+]+)\s*$', re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def route_counts(text: str, route: str) -> tuple[float, float]:
    """(answers, errors) on `route` in a /metrics page; errors: >= 500, not `killed`."""
    total = errors = 0.0
    for labels, value in _LINE.findall(text):
        lab = dict(_LABEL.findall(labels))
        if lab.get("route") != route:
            continue
        n = float(value)
        total += n
        code = lab.get("code", "")
        if code.isdigit() and int(code) >= 500 and lab.get("decision") != "killed":
            errors += n
    return total, errors


class ErrorWatch:
    """Calls `on_abort(reason)` once users' error rate on `route` over the last `window`
    seconds passes `error_rate` (with at least `min_requests` answers).

    Reads the /metrics of every instance at the admin address it publishes, each one
    once; `fallback` (the admin URL the drill was given: often a load-balanced name, which
    answers for a different instance from one read to the next) only in a turn where none
    of those can be read. Counters are compared per instance (the page's
    `x-killgate-instance`, by the data address it publishes: the workers of one group
    share both; the admin address when a page does not say): an instance first or no
    longer read, or whose counters went back (a restart), adds nothing to the window.

    The drill's own answers are taken out per instance: `own()` counts them per data
    address, `data_of` pairs instance ids with data addresses (the fleet's heartbeats), and
    an instance's delta loses only what the drill sent to it. Before, every page read lost
    all of the drill's answers: behind a load-balanced admin URL (one page a turn) users'
    errors never reached `min_requests`. The drill's answers to an address no instance
    publishes (`--instances` through a load balancer) are taken out in the share of the
    fleet read."""

    def __init__(self, session: aiohttp.ClientSession, admins: list[str], route: str,
                 own: Callable[[], dict[str, tuple[int, int]]], error_rate: float,
                 min_requests: int, interval: float, window: float = 5.0,
                 fallback: str | None = None, data_of: dict[str, str] | None = None) -> None:
        self.session = session
        self.admins = admins
        self.fallback = fallback
        self.route = route
        self.own = own
        self.data_of = data_of or {}
        self.error_rate = error_rate
        self.min_requests = min_requests
        self.interval = interval
        self.window = window
        self.samples: deque[tuple[float, dict[str, tuple[float, float]],
                                  dict[str, tuple[int, int]]]] = deque()
        self.unreadable: set[str] = set()
        self.worst = 0.0

    async def _one(self, url: str) -> tuple[str, tuple[float, float]] | None:
        """(whose page it is: the data address its instance publishes, else its instance
        id, else `url`; its counts) from the page at `url`."""
        try:
            async with self.session.get(url + "/metrics",
                                        timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status != 200:  # (421 host_not_allowed, 401, 503: not the page)
                    self.unreadable.add(url)
                    return None
                who = r.headers.get("x-killgate-instance", "")
                # (the workers of one `serve --workers N` share a page and a data address)
                key = self.data_of.get(who) or who or url
                return key, route_counts(await r.text(), self.route)
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            self.unreadable.add(url)
            return None

    async def _read(self) -> dict[str, tuple[float, float]]:
        """(answers, errors) on the route per instance read this turn."""
        got = await asyncio.gather(*(self._one(u) for u in self.admins))
        out = dict(c for c in got if c is not None)
        if not out and self.fallback is not None:
            c = await self._one(self.fallback)
            if c is not None:
                out[c[0]] = c[1]
        return out

    def _delta(self, old: dict[str, tuple[float, float]], own_old: dict[str, tuple[int, int]],
               new: dict[str, tuple[float, float]],
               own_new: dict[str, tuple[int, int]]) -> tuple[float, float]:
        """Users' (answers, errors) between two samples: the instances read in both, less
        the drill's own answers to those instances."""
        total = errors = 0.0
        read: list[str] = []
        for who, (t, e) in new.items():
            if who in old and t >= old[who][0]:
                total += t - old[who][0]
                errors += max(0.0, e - old[who][1])
                read.append(who)

        def sent(data: str) -> tuple[int, int]:
            t1, e1 = own_new.get(data, (0, 0))
            t0, e0 = own_old.get(data, (0, 0))
            return t1 - t0, e1 - e0

        paired = set(self.data_of.values())
        own_t = own_e = 0.0
        for key in read:
            if key in paired:
                t, e = sent(key)
                own_t, own_e = own_t + t, own_e + e
        # the drill's answers through an address no instance publishes: spread over the
        # fleet (a load balancer), the share read is in the counts (all of it when the
        # fleet is unknown, or a page did not say which instance it is)
        share = (min(1.0, len(read) / len(paired))
                 if paired and all(k in paired for k in read) else 1.0)
        for data in set(own_new) - paired:
            t, e = sent(data)
            own_t, own_e = own_t + t * share, own_e + e * share
        return total - own_t, max(0.0, errors - own_e)

    async def run(self, on_abort: Callable[[str], None]) -> None:
        while True:
            counts = await self._read()
            own = self.own()
            now = time.monotonic()
            self.samples.append((now, counts, own))
            while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
                self.samples.popleft()
            _, c0, own0 = self.samples[0]
            d_total, d_err = self._delta(c0, own0, counts, own)
            if d_total >= self.min_requests:
                rate = d_err / d_total
                self.worst = max(self.worst, rate)
                if rate > self.error_rate:
                    on_abort(f"users' error rate on route {self.route!r} reached "
                             f"{rate:.1%} ({d_err:g} of {d_total:g} answers) > "
                             f"{self.error_rate:.1%}")
                    return
            await asyncio.sleep(self.interval)


def own_counts(obs: list[Obs]) -> dict[str, tuple[int, int]]:
    """The drill's own answers and errors (as the gateways counted them), per data
    address it sent them to."""
    out: dict[str, tuple[int, int]] = {}
    for o in obs:
        if o.status != 0:
            t, e = out.get(o.instance, (0, 0))
            out[o.instance] = (t + 1, e + is_error(o))
    return out
