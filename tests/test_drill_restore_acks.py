"""`killgate drill restore ID` said 'restored: the route is exactly as before the drill'
(exit 0) when an instance had not applied the restore: the drill's kill still in force
there, and the operator told it was over. The README's promise is the state as before
with every instance having applied the restore (the drill runner checks the receipt's
pending instances; the restore command did not). Real `killgate serve` processes on a real
redis; one frozen (SIGSTOP) before the restore."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer
from tests.drillrig import call, hdr, routes
from tests.test_cli import acli
from tests.test_revops_fleet import _serve, _state

pytestmark = pytest.mark.timeout(90)


async def test_restore_says_which_instances_have_not_applied_it(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    a = await _serve(gateway_procs, tmp_path / "a", routes(p1, p2), _state(redis_server, tmp_path / "a"))
    b = await _serve(gateway_procs, tmp_path / "b", routes(p1, p2), _state(redis_server, tmp_path / "b"))
    async with aiohttp.ClientSession() as s:
        st, out = await call(s, "POST", f"{a.admin}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "reason": "rehearsal"})
        assert st == 200, out
        drill = out["drill"]
        st, out = await call(s, "POST", f"{a.admin}/v1/drills/{drill}/inject", {"reason": "r"})
        assert st == 200 and out["applied"]["acked"] == 2, out
    b.signal(signal.SIGSTOP)  # frozen: it still holds the drill's kill
    try:
        r = await acli("drill", "restore", drill, "--admin", a.admin, "--json",
                       env={"KILLGATE_TOKEN": hdr()["Authorization"].split()[1]})
        got = json.loads(r.stdout)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert got["restored"] is False and got["pending"], got
        assert "not applied" in r.stderr, r.stderr
    finally:
        b.signal(signal.SIGCONT)
    await asyncio.sleep(0)
