"""A drill names a worker of a `serve --workers N` group that is still running without its
restore (control/drillbehind.py).

The workers of a group are instances of their own that publish one admin address (the
port is shared: SO_REUSEPORT). The drill asked that address once: the kernel handed the
connection to either worker, and when the one that answered was the sibling, the worker
cut off from the store, serving on with the drill's kill, was taken for gone: the drill
passed (about half the time with 2 workers). Real `killgate serve` processes on a real
redis; one worker's store connections through a forwarder that refuses that worker alone;
the real drill CLI.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, free_port, wait_until, write_config
from tests.drillfleet import Fleet
from tests.drillrig import Drill, routes
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_revops_fleet import _state
from tests.test_workers import _children

pytestmark = [pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc"),
              pytest.mark.timeout(120)]

LEASE = {"heartbeat_interval": "200ms", "command_timeout": "300ms", "instance_lease": "1500ms"}
ARGS = ("kill", "--route", "iris-drill", "--version", "v2", "--rate", "40", "--steady",
        "600ms", "--hold", "2500ms", "--settle", "500ms")


def _inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def _owner(client_port: int, server_port: int, pids: list[int]) -> int | None:
    """The process of `pids` holding the TCP connection from `client_port` to
    `server_port` (both on loopback), from /proc/net/tcp."""
    mine, theirs = f":{client_port:04X}", f":{server_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(mine) and f[2].endswith(theirs):
            return next((p for p in pids if f[9] in _inodes(p)), None)
    return None


async def _instances(session: ClientSession, admin: str, token: str) -> dict[str, dict]:
    async with session.get(f"{admin}/v1/status",
                           headers={"authorization": f"Bearer {token}"}) as r:
        return dict((await r.json()).get("instances") or {}) if r.status == 200 else {}

async def a_and_group(tmp_path: Path, backends: Any, redis_server: RedisServer,
                      gateway_procs: Any, session: ClientSession, fwd: Forwarder,
                      lease: dict[str, str]) -> tuple[Any, Any, str]:
    """Instance A on the store, and B, a `--workers 2` group reaching it through `fwd`,
    each worker in the fleet with the admin address it published (the first heartbeats,
    sent before the listeners open, name none): (A, B, a read token)."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = gateway_procs(write_config(tmp_path / "a", routes(p1, p2),
                                   state=_state(redis_server, tmp_path / "a", **lease),
                                   listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"))
    b = gateway_procs(write_config(tmp_path / "b", routes(p1, p2),
                                   state=redis_state_via(fwd, tmp_path / "b", "revops", **lease),
                                   listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"), workers=2)
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    read = admin_token("killgate:read")

    async def three() -> bool:
        found = await _instances(session, a.admin, read)
        return len(found) == 3 and all(i.get("admin") for i in found.values())

    await wait_until(three, 20, 0.1, "A and B's two workers in the fleet")
    return a, b, read



async def test_a_worker_cut_off_from_the_store_fails_the_drill_naming_it(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        a, b, read = await a_and_group(tmp_path, backends, redis_server, gateway_procs,
                                       session, fwd, LEASE)
        workers = _children(b.proc.pid)
        assert len(workers) == 2, workers
        victim = workers[1]
        names = [n for n in await _instances(session, a.admin, read) if f"-{victim}-" in n]
        assert len(names) == 1, names
        name = names[0]
        f = Fleet(redis_server, [a, b], tmp_path)
        # (spawned off the loop: B reaches redis through a forwarder on this loop, lease 1 s)
        drill = await asyncio.to_thread(Drill, f, *ARGS, "--instances", a.url)
        await drill.wait_line("injected")
        # one worker of B is cut off from the store: it serves on, killed; its sibling not
        fwd.cut(lambda port: _owner(port, fwd.port, workers) == victim)
        code, report, err = await drill.result()
        assert report is not None and report["verdict"] == "failed", (
            code, err[-3000:], report and {k: report.get(k) for k in (
                "restore_short", "restore", "receipts", "reasons")})
        # (its sibling too, when a loaded machine lapsed its lease: it may be asked as well)
        assert name in report["restore_short"]["behind"], (name, report["restore_short"])
        assert report["restore_short"]["unverified"] == [], report["restore_short"]
        assert any(name in r and "without the restore" in r for r in report["reasons"]), report
        said = [ln for ln in err.splitlines() if "RESTORE NOT APPLIED by" in ln]
        assert said and name in said[0], err
    finally:
        await fwd.close()
