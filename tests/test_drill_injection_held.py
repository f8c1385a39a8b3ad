"""A drill fails when an instance it started with, alive, was not running its injection at
the end of the hold, though it runs the restore by the check after it (revdrill9).

A drill's traffic sees the instances it is sent to: with `--instances` naming some of them,
and for the workers of a `serve --workers N` group (one data address: the kernel hands each
connection to one of them), an instance the drill's requests never reach is seen by the
receipts and the check after the restore alone. A worker cut off from the store before the
injection never held the kill: the injection's receipt, counting live instances only, said
nothing of it once its lease had run out, and when it reached the store again after the
restore, the check found it running the restore: the drill PASSED, the instance having
served the killed version all along. Now each instance the drill started with is asked at
the end of the hold, as after the restore (control/drillbehind.py, named at once): one that
proves itself behind the injection fails the drill (`inject_check`, INJECTION NOT HELD).
Real `killgate serve` processes on a real redis, one worker's store connections through a
forwarder that refuses that worker alone until the restore; the real drill CLI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import RedisServer
from tests.drillfleet import Fleet
from tests.drillrig import Drill
from tests.faultproxy import Forwarder
from tests.test_drill_behind_workers import _instances, _owner, a_and_group
from tests.test_workers import _children

pytestmark = [pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc"),
              pytest.mark.timeout(120)]

#: a lease that outlasts the test: the victim, cut off, stays listed live, so that a drill
#: the rig runs again (its steady window not filled on a loaded machine) starts with it too
LEASE = {"heartbeat_interval": "200ms", "command_timeout": "300ms", "instance_lease": "30s"}
ARGS = ("kill", "--route", "iris-drill", "--version", "v2", "--rate", "40", "--steady",
        "600ms", "--hold", "2500ms", "--settle", "500ms")


async def test_a_worker_without_the_kill_all_hold_fails_the_drill_though_restored(
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
        drill = await asyncio.to_thread(Drill, f, *ARGS, "--instances", a.url)
        await drill.wait_line("opened")
        # one worker of B cut off from the store before the kill: it never holds it
        fwd.cut(lambda port: _owner(port, fwd.port, workers) == victim)
        await drill.wait_line("restored")
        fwd.refuse = None  # (back: it reads the restore, the check after it finds it so)
        code, report, err = await drill.result()
        assert report is not None, (code, err[-3000:])
        check = report.get("inject_check")
        assert report["verdict"] == "failed" and check is not None, (
            code, err[-3000:], json.dumps({k: report.get(k) for k in (
                "verdict", "reasons", "restore_short", "restore_check", "inject_check",
                "receipts")}))
        assert check["late"] == [name], check
        assert any(name in r and "injection" in r for r in report["reasons"]), report["reasons"]
        said = [ln for ln in err.splitlines() if "INJECTION NOT HELD by" in ln]
        assert said and name in said[0], err
        assert code == 1  # (failed)
    finally:
        await fwd.close()
