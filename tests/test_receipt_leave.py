"""Receipts after an instance stops cleanly (a rolling update, a scale-down, a worker group's
stop): the instance leaves the fleet (its heartbeat removed from the store) and must not be
waited for, nor named as not yet having applied a kill.

Each instance learns who is live from the heartbeats it hears on the acks channel; an
instance that left stopped heartbeating but was still heard within its lease (2 s here, 5 s
by default): a kill right after waited the whole `?wait=` for it and answered it `pending`
(`killgate kill` exits 4, "NOT YET by" a process that is gone)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import auth, kill, redis_state

pytestmark = pytest.mark.timeout(60)


async def test_an_instance_that_left_is_not_waited_for(tmp_path: Path, backends,
                                                       redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path / "a", two_versions(p, p, 100, 0),
                         state=redis_state(redis_server, tmp_path, "a"))
    cfg_b = write_config(tmp_path / "b", two_versions(p, p, 100, 0),
                         state=redis_state(redis_server, tmp_path, "b"))
    async with running_gateway(cfg_a, "gw-a") as a, ClientSession() as s:
        async with running_gateway(cfg_b, "gw-b") as b:
            # both know each other from the acks channel (past the store-read start-up)
            await wait_until(lambda: "gw-b" in a.gw.sync.peers.heard
                             and a.gw.sync.peers.watching_since is not None
                             and time.monotonic() - a.gw.sync.peers.watching_since > 0.5,
                             10, 0.05, "a to hear b")
            got = await kill(s, a.admin, "1s", scope="version", route="iris", version="v2")
            assert got["applied"]["pending"] == [] and got["applied"]["instances"] == 2
            del b
        t0 = time.monotonic()  # b has left (its heartbeat removed from the store)
        got = await kill(s, a.admin, "1.5s", scope="route", route="iris")
        elapsed = time.monotonic() - t0
        assert got["applied"]["pending"] == [], got["applied"]
        assert got["applied"]["instances"] == 1, got["applied"]
        assert elapsed < 1.0, elapsed


async def test_a_crashed_instance_stops_being_waited_for_once_its_lease_ran_out(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash leaves no goodbye: the instance is pending until its lease (2 s) runs out,
    then no longer, also while writes keep coming (each receipt's own bookkeeping counted
    as having heard the instance again, so writes less than a lease apart kept a dead
    instance pending for ever: an operator retrying a kill that said "NOT YET by" it)."""
    import os
    import signal

    from tests.conftest import STATE_KEY, free_port

    monkeypatch.setenv("KILLGATE_TEST_STATE_KEY", STATE_KEY)
    p = await backends(echo_app("v1"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path / "a", two_versions(p, p, 100, 0),
                         state=redis_state(redis_server, tmp_path, "a"))
    cfg_b = write_config(tmp_path / "b", two_versions(p, p, 100, 0),
                         state=redis_state(redis_server, tmp_path, "b"),
                         listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    b = gateway_procs(cfg_b, env={"KILLGATE_TEST_STATE_KEY": STATE_KEY})
    async with running_gateway(cfg_a, "gw-a") as a, ClientSession() as s:
        import asyncio

        await asyncio.to_thread(b.wait_ready)
        await wait_until(lambda: len(a.gw.sync.peers.heard) == 2 and time.monotonic()
                         - (a.gw.sync.peers.watching_since or time.monotonic()) > 0.5,
                         10, 0.05, "a to hear b")
        got = await kill(s, a.admin, "2s", scope="version", route="iris", version="v2")
        assert got["applied"]["instances"] == 2 and got["applied"]["pending"] == []
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(5)
        died = time.monotonic()
        pendings = []
        flip = True
        while time.monotonic() - died < 6:  # writes 0.4 s apart, well within the lease
            path = "/v1/unkill" if flip else "/v1/kill"
            flip = not flip
            async with s.post(a.admin + path + "?wait=300ms", headers=auth(),
                              json={"scope": "version", "route": "iris", "version": "v2",
                                    "reason": "x"}) as r:
                data = await r.json()
                assert r.status == 200, data
            pendings.append((round(time.monotonic() - died, 2), data["applied"]["pending"]))
            await asyncio.sleep(0.1)
        late = [pnd for t, pnd in pendings if t > 3.0]  # lease 2 s, heartbeat row age
        assert late and all(pnd == [] for pnd in late), pendings
