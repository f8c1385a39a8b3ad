"""A worker of a `serve --workers 2` group that is merely slow is not named behind a drill's
restore; one that never catches up is (control/drillbehind.py).

The drill asked each instance the store did not show at the restore's generation, and named
at once one that answered with an older generation. A worker on a loaded machine (here:
stopped while the restore is made, resumed while the drill asks) answers the asks waiting
for it before it has read the store again: it was named behind, and the drill failed, though
it applied the restore a moment later. An instance that answers "behind" is now asked again
once it has had a poll interval to catch up. Real `killgate serve` processes (one of them
with `--workers 2`) on a real redis, the group's store link through a forwarder; the
drill's own question (`behind`) over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientSession

from gateway.control.drillbehind import behind, catch_up_for
from gateway.control.drillload import AdminClient
from gateway.control.drills import _seconds
from tests.conftest import RedisServer, admin_token, wait_until
from tests.drillrig import call
from tests.faultproxy import Forwarder
from tests.test_drill_behind_workers import LEASE, _instances, _owner, a_and_group
from tests.test_workers import _children

pytestmark = [pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc"),
              pytest.mark.timeout(120)]

POLL = 0.1  # (redis_state_via's poll_interval)


def _queued(port: int) -> int:
    """Connections to `port` on loopback that no process has accepted yet (inode 0): asks
    waiting in a stopped worker's queue."""
    theirs = f":{port:04X}"
    return sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
               if (f := line.split())[1].endswith(theirs) and f[3] == "01" and f[9] == "0")


async def test_a_slow_worker_is_given_a_poll_to_catch_up_and_one_cut_off_is_named(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    victim = 0
    try:
        a, b, read = await a_and_group(tmp_path, backends, redis_server, gateway_procs,
                                       session, fwd, LEASE)
        workers = _children(b.proc.pid)
        assert len(workers) == 2, workers
        victim = workers[1]
        group = [n for n, i in (await _instances(session, a.admin, read)).items()
                 if i.get("admin", "").rstrip("/") == b.admin.rstrip("/")]
        assert len(group) == 2, group
        name = next(n for n in group if f"-{victim}-" in n)
        port = urlsplit(b.admin).port
        assert port is not None
        api = AdminClient(session, a.admin, admin_token("killgate:admin"))
        # (what a drill reads of the fleet's poll interval: /v1/config, as DrillRunner does)
        state = (await api.call("GET", "/v1/config"))["config"]["state"]
        allowance = catch_up_for(_seconds(state.get("poll_interval"), 5.0))
        assert allowance == catch_up_for(POLL), state

        def mine(p: int) -> bool:
            return _owner(p, fwd.port, workers) == victim

        async def slowed(body: dict[str, str], for_good: bool) -> tuple[list[str], float]:
            """The victim stopped, its store links dropped meanwhile (as a pause long enough
            for them to time out), while A commits `body`; resumed once the drill's
            question waits at it, its links allowed again unless `for_good`: whom the
            question names, and how long it took."""
            os.kill(victim, signal.SIGSTOP)
            fwd.cut(mine)
            st, out = await call(session, "POST", f"{a.admin}/v1/kill", body,
                                 {"authorization": f"Bearer {admin_token('killgate:admin')}"})
            assert st == 200, out
            t0 = time.monotonic()
            asked = asyncio.ensure_future(behind(api, group, {n: b.admin for n in group},
                                                 out["generation"], catch_up=allowance))
            try:
                for _ in range(2):  # (seen twice, 50 ms apart: an ask waits at it)
                    await wait_until(lambda: _queued(port) > 0, 5, 0.01, "an ask at it")
                    await asyncio.sleep(0.05)
            finally:
                if not for_good:
                    fwd.refuse = None
                os.kill(victim, signal.SIGCONT)
            return (await asked).late, time.monotonic() - t0

        # slow only: resumed, it answers the asks waiting for it at once, with the generation
        # it held, and reads the store again within a poll (its reconnect): not named
        late, took = await slowed({"scope": "version", "route": "iris", "version": "v2",
                                   "reason": "INC-1"}, False)
        assert late == [], (late, took)
        # cut off for good: it never catches up, and is named once asked again after its
        # allowance
        late, took = await slowed({"scope": "version", "route": "iris", "version": "v1",
                                   "reason": "INC-2"}, True)
        assert late == [name], (late, name, took)
        assert took >= allowance, took
    finally:
        if victim:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        await fwd.close()


async def test_an_instance_behind_is_asked_again_after_its_allowance(backends) -> None:
    """The rule alone, over real HTTP: an address whose instance answers "behind" until a
    moment has passed is not named; one that stays behind is asked again meanwhile and
    named once catch_up has passed (not before)."""
    from aiohttp import web

    started = time.monotonic()
    asked: list[float] = []

    def listener(catches_up: float | None):  # type: ignore[no-untyped-def]
        async def ready(request: web.Request) -> web.Response:
            now = time.monotonic() - started
            asked.append(now)
            gen = 5 if catches_up is not None and now >= catches_up else 4
            return web.json_response({"instance": "w", "generation": gen, "ready": True})
        app = web.Application()
        app.router.add_get("/readyz", ready)
        return app

    async def fleet(request: web.Request) -> web.Response:
        return web.json_response({"instances": {}})

    home = web.Application()
    home.router.add_get("/v1/status", fleet)
    operator = await backends(home)
    slow, stuck = await backends(listener(0.2)), await backends(listener(None))
    async with ClientSession() as session:
        api = AdminClient(session, f"http://127.0.0.1:{operator}", "t")
        caught = await behind(api, ["w"], {"w": f"http://127.0.0.1:{slow}"}, 5, catch_up=0.3)
        assert caught.late == [] and caught.unproven == ["w"], caught
        asked.clear()
        t0 = time.monotonic() - started
        never = await behind(api, ["w"], {"w": f"http://127.0.0.1:{stuck}"}, 5, catch_up=0.3)
        assert never.late == ["w"], never
        # (asked again within its allowance, a few times, and named at the first answer
        # past it: not before)
        assert 2 <= len(asked) <= 5 and asked[-1] - t0 >= 0.3, asked
        # (without an allowance: named at its first answer, as before)
        assert (await behind(api, ["w"], {"w": f"http://127.0.0.1:{stuck}"}, 5)).late == ["w"]


async def test_an_instance_reconnecting_after_a_store_outage_is_given_its_reconnect(
        backends) -> None:
    """A restore made as a store's pause ends (a store-loss drill's, or `killgate drill
    restore` meeting that pause) finds instances waiting out their reconnect backoff (up to
    1.5 s). The allowance was a poll + 0.5 s: 0.55 s with a 50 ms poll, and such an instance
    was named as not having applied the restore (CI, stop 38). It now covers the reconnect,
    and the instance is asked again meanwhile: one that catches up sooner is let off
    sooner."""
    from aiohttp import web

    from gateway.control.drillbehind import RECONNECT
    from gateway.state.sync import BACKOFF_MAX

    assert RECONNECT >= BACKOFF_MAX * 1.5  # (the sync loop's longest wait, jitter included)
    started = time.monotonic()
    asked: list[float] = []

    async def ready(request: web.Request) -> web.Response:
        now = time.monotonic() - started
        asked.append(now)
        gen = 5 if now >= BACKOFF_MAX * 1.5 else 4  # (reconnected, then caught up)
        return web.json_response({"instance": "w", "generation": gen, "ready": True})

    async def fleet(request: web.Request) -> web.Response:
        return web.json_response({"instances": {}})

    app, home = web.Application(), web.Application()
    app.router.add_get("/readyz", ready)
    home.router.add_get("/v1/status", fleet)
    operator, port = await backends(home), await backends(app)
    async with ClientSession() as session:
        api = AdminClient(session, f"http://127.0.0.1:{operator}", "t")
        found = await behind(api, ["w"], {"w": f"http://127.0.0.1:{port}"}, 5,
                             catch_up=catch_up_for(0.05))
    took = time.monotonic() - started
    assert found.late == [] and found.unproven == ["w"], found
    assert len(asked) <= 10, asked  # (a few asks, not a flood)
    assert took < catch_up_for(0.05) + 2.0, took  # (against a hang)
