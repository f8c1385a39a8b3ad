"""A drill's abort watch behind a load-balanced admin URL (control/drillabort.py).

The drill review of stop 31 found it: when the admin addresses the instances publish cannot
be read (a pod IP the drill's host cannot reach), the watch reads the admin URL it was given,
often a load balancer that answers for another instance each time. It compared those pages
as one instance and took all of the drill's own answers out of the one page it read, so
users' errors never reached `min_requests` and a drill on a production route never
aborted. Pages now say whose they are (`x-killgate-instance`) and the drill's answers are
taken out per instance."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillabort import ErrorWatch
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(30)

DATA = {"gw-a-101-aa": "http://10.0.0.1:8080", "gw-b-202-bb": "http://10.0.0.2:8080"}


class Fleet:
    """Two instances' counters on route iris, and what the drill sent to each."""

    def __init__(self) -> None:
        self.pages = {who: [0.0, 0.0] for who in DATA}  # (answers, errors)
        self.own: dict[str, tuple[int, int]] = {}

    def tick(self, users: int, users_errors: int, drill: int, drill_errors: int,
             through: str | None = None) -> None:
        """One step of traffic on each instance; the drill's either to each instance's own
        data address or, `through` one address, half to each."""
        for who, data in DATA.items():
            self.pages[who][0] += users + drill
            self.pages[who][1] += users_errors + drill_errors
            key = through or data
            t, e = self.own.get(key, (0, 0))
            self.own[key] = (t + drill, e + drill_errors)

    def page(self, who: str) -> web.Response:
        total, errors = self.pages[who]
        return web.Response(text=(
            f'killgate_requests_total{{code="200",decision="weighted",route="iris",'
            f'version="v1"}} {total - errors}\n'
            f'killgate_requests_total{{code="502",decision="weighted",route="iris",'
            f'version="v1"}} {errors}\n'), headers={"x-killgate-instance": who})


async def _watch(backends, step: Callable[[Fleet], None]) -> tuple[list[str], ErrorWatch]:
    """The watch reading, through an admin URL that answers for the instances in turn,
    pages that moved by one `step` of traffic before each read (so a page and the drill's
    own counts read after it agree, as they do when answers are counted where they are
    sent)."""
    fleet = Fleet()
    turn = itertools.cycle(DATA)
    reads = 0
    enough = asyncio.Event()

    async def metrics(request: web.Request) -> web.Response:
        nonlocal reads
        reads += 1
        if reads >= 30:
            enough.set()
        step(fleet)
        return fleet.page(next(turn))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    lb = f"http://127.0.0.1:{await backends(app)}"
    unreachable = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    reasons: list[str] = []
    async with ClientSession() as s:
        watch = ErrorWatch(s, unreachable, "iris", lambda: dict(fleet.own), 0.2, 20, 0.01,
                           window=30, fallback=lb, data_of=DATA)
        task = asyncio.create_task(watch.run(reasons.append))
        waiting = asyncio.create_task(enough.wait())
        await asyncio.wait({task, waiting}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.done() or reads >= 30, reads
    return reasons, watch


async def test_users_errors_abort_behind_a_load_balanced_admin_url(backends) -> None:
    # users: 10 answers a step on each instance, half failing; the drill: 30, all fine
    reasons, watch = await _watch(backends, lambda f: f.tick(10, 5, 30, 0))
    assert reasons and "error rate on route 'iris' reached 50.0%" in reasons[0], reasons
    assert watch.worst == pytest.approx(0.5)


async def test_the_drills_own_errors_never_abort_behind_one(backends) -> None:
    # the drill's answers fail (it injected the fault); users' do not
    reasons, watch = await _watch(backends, lambda f: f.tick(10, 0, 10, 10))
    assert not reasons
    assert watch.worst == 0.0


async def test_the_drills_answers_through_a_data_load_balancer_are_shared(backends) -> None:
    # the drill sent through one data address (`--instances` a load balancer): half of its
    # answers reached each instance; the page read holds half of them
    reasons, watch = await _watch(
        backends, lambda f: f.tick(10, 0, 10, 10, through="http://lb.example:80"))
    assert not reasons
    assert watch.worst == 0.0
    reasons, watch = await _watch(
        backends, lambda f: f.tick(10, 5, 10, 0, through="http://lb.example:80"))
    assert reasons and "reached 50.0%" in reasons[0], reasons
