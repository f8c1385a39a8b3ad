"""`killgate drill restore ID` (a drill process died mid-drill) asks every instance whether
it applied the restore, as a drill's own end does (control/drillbehind.py), and fails
naming one that did not: it restored and exited 0 on the store's word, while instance B,
cut off from the store, served on with the drill's kill in force. With B connected it
passes. Real `killgate serve` processes on a real redis, B's link through a forwarder, the
drill and the restore as real CLI processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import RedisServer, wait_until
from tests.drillfleet import token
from tests.drillrig import Drill
from tests.faultproxy import Forwarder
from tests.test_cli import acli
from tests.test_drill_behind import _fleet
from tests.test_revops_fleet import _name

pytestmark = pytest.mark.timeout(90)

ARGS = ("kill", "--route", "iris-drill", "--version", "v2", "--rate", "20", "--steady",
        "300ms", "--hold", "60s", "--settle", "300ms")


async def _died_mid_drill(tmp_path: Path, backends, redis_server: RedisServer,
                          gateway_procs, fwd: Forwarder):  # type: ignore[no-untyped-def]
    f = await _fleet(tmp_path, backends, redis_server, gateway_procs, fwd)
    a = f.gateways[0]
    drill = await asyncio.to_thread(Drill, f, *ARGS, "--instances", a.url)
    opened = await drill.wait_line("opened")
    ident = opened.split(": drill ", 1)[1].split(" ", 1)[0]
    await drill.wait_line("injected")
    await asyncio.to_thread(drill.kill)  # (SIGKILL: nothing of it restores)
    return f, ident


async def _restore(f, ident: str):  # type: ignore[no-untyped-def]
    return await acli("drill", "restore", ident, "--json", "--admin", f.admin,
                      "--token", token())


async def test_restore_names_an_instance_cut_off_from_the_store(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        f, ident = await _died_mid_drill(tmp_path, backends, redis_server, gateway_procs, fwd)
        b = f.gateways[1]
        name = _name(b.output())
        fwd.point(None)  # B is cut off from the store: it serves on, killed
        res = await _restore(f, ident)
        assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
        assert f"RESTORE NOT APPLIED by {name}" in res.stderr, res.stderr
        out = json.loads(res.stdout)
        assert out["restored"] is False and out["restore_check"]["late"] == [name], out
        assert out["restore_check"]["proof"] == "required", out  # (B proved it is behind)
    finally:
        await fwd.close()


async def test_restore_names_one_cut_off_whose_lease_ran_out(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    """B cut off long enough for its lease to run out: no longer in the fleet, so the
    restore's receipt and a fleet read both miss it, while it enforces the drill's kill.
    The drill.start event recorded the instances the drill opened with: B is asked."""
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        f, ident = await _died_mid_drill(tmp_path, backends, redis_server, gateway_procs, fwd)
        b = f.gateways[1]
        name = _name(b.output())
        fwd.point(None)
        await wait_until(lambda: _gone(f.admin, name), 10, 0.1, "B's lease run out")
        res = await _restore(f, ident)
        assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
        assert f"RESTORE NOT APPLIED by {name}" in res.stderr, res.stderr
        out = json.loads(res.stdout)
        assert out["pending"] == [] and out["restore_check"]["late"] == [name], out
    finally:
        await fwd.close()


async def _gone(admin: str, name: str) -> bool:
    async with ClientSession() as s, s.get(f"{admin}/v1/status", headers={
            "authorization": f"Bearer {token('killgate:read')}"}) as r:
        return name not in ((await r.json()).get("instances") or {})


async def test_restore_passes_when_every_instance_applied_it(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        f, ident = await _died_mid_drill(tmp_path, backends, redis_server, gateway_procs, fwd)
        res = await _restore(f, ident)
        assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
        assert "RESTORE NOT" not in res.stderr, res.stderr
        out = json.loads(res.stdout)
        check = out["restore_check"]
        assert out["restored"] is True and check["late"] == [] and check["unasked"] == [], out
        assert check["proof"] == "required" and check["unverified_applied"] == [], out
    finally:
        await fwd.close()
